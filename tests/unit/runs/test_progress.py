"""neuronrank.runs.progress: a run's progress messages, written and read back."""

from neuronrank.runs.progress import stage_progress


def test_stage_progress_parses_run_messages():
    assert stage_progress("dense perplexity: 4,096/8,192 tokens, 900 tok/s, ETA 5s") == \
        ("dense perplexity", "4,096/8,192 tokens, 900 tok/s, ETA 5s", 0.5)
    assert stage_progress("converting the GGUF model to safetensors (once, about 20 s on a CPU)") == \
        ("converting the GGUF model to safetensors (once, about 20 s on a CPU)", "", None)
    assert stage_progress("pruned perplexity: starting") == ("pruned perplexity", "starting", None)
