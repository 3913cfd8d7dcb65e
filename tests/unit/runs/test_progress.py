"""neuronrank.runs.progress: a run's progress messages, written and read back."""

from neuronrank.runs.progress import stage_progress


def test_stage_progress_parses_run_messages():
    assert stage_progress("dense perplexity: 4,096/8,192 tokens, 900 tok/s, ETA 5s") == \
        ("dense perplexity", "4,096/8,192 tokens, 900 tok/s, ETA 5s", 0.5)
    assert stage_progress("converting the GGUF model to safetensors (once, about 20 s on a CPU)") == \
        ("converting the GGUF model to safetensors (once, about 20 s on a CPU)", "", None)
    assert stage_progress("pruned perplexity: starting") == ("pruned perplexity", "starting", None)


def test_eta_leaves_out_the_warm_up(monkeypatch):
    """Loading and a slow first batch (10 s) before batches of 1 s: the ETA after the second batch is the
    remaining batches at 1 s, not at the average that includes the warm-up (which read 183 s left at 32 s
    of a 120 s pass)."""
    from neuronrank.runs import progress as prog

    clock = {"t": 0.0}
    monkeypatch.setattr(prog.time, "perf_counter", lambda: clock["t"])
    seen = []
    update = prog.token_progress(lambda f, m, force=False: seen.append((f, m)), "statistics")
    clock["t"] = 10.0
    update(100, 1000)  # the first batch: no ETA yet
    assert "ETA" not in seen[-1][1] and "100/1,000 tokens" in seen[-1][1]
    clock["t"] = 11.0
    update(200, 1000)
    assert seen[-1][1].endswith("100 tok/s, ETA 8s")  # 800 tokens left at 100 tok/s
    clock["t"] = 13.0
    update(400, 1000)
    assert seen[-1][1].endswith("ETA 6s")
    assert stage_progress(seen[-1][1])[2] == 0.4
