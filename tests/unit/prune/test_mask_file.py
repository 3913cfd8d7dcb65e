"""Saved pruning masks: packed bits in safetensors that re-create the pruned weights bit for bit and keep
a fine-tuned model sparse."""

import json

import numpy as np
import pytest
import torch

from neuronrank.cli import main
from neuronrank.engine.models import mlp_blocks
from neuronrank.errors import UserError
from neuronrank.prune.mask_file import apply_masks, load_masks, pack, read_metadata, save_masks, unpack
from tests.conftest import make_tiny


def _prune_args(tiny_dir, text_file, *extra):
    return ["prune", "--model", str(tiny_dir), "--calib", f"file:{text_file}", "--eval", f"file:{text_file}",
            "--nsamples", "4", "--seqlen", "16", "--eval-seqlen", "16", "--eval-windows", "2", "--json", *extra]


@pytest.mark.parametrize("stype", ["unstructured", "2:4"])
def test_saved_masks_turn_the_dense_model_into_the_pruned_one_bit_for_bit(tiny_dir, text_file, tmp_path, capsys,
                                                                         stype):
    from transformers import AutoModelForCausalLM

    masks_path, pruned_dir = tmp_path / "masks.safetensors", tmp_path / "pruned"
    assert main(_prune_args(tiny_dir, text_file, "--prune_method", "neuronrank_old", "--sparsity_ratio", "0.5",
                            "--sparsity_type", stype, "--tf-exp", "2", "--save-masks", str(masks_path),
                            "--save_model", str(pruned_dir))) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["saved_masks"]["path"] == str(masks_path) and res["saved_masks"]["tensors"] == 2 * 3
    meta = read_metadata(masks_path)
    assert (meta["method"], meta["ratio"], meta["type"], meta["group"]) == ("neuronrank_old", 0.5, stype, "matrix")
    assert meta["protocol"]["nsamples"] == 4 and meta["protocol"]["beta"] == 2.0
    assert meta["protocol"]["calibration"] == "one-pass" and meta["layers"] == [0, 1]

    dense = AutoModelForCausalLM.from_pretrained(tiny_dir)
    pruned = AutoModelForCausalLM.from_pretrained(pruned_dir)
    masks = load_masks(masks_path, dense)
    assert all(m.dtype == torch.bool for m in masks.values())
    # the dense model had no zeros: the masks hold exactly half of each matrix (2 of every 4 for 2:4)
    for name, m in masks.items():
        assert int(m.sum()) == m.numel() // 2, name
        if stype == "2:4":
            assert (m.reshape(m.shape[0], -1, 4).sum(-1) == 2).all()
    apply_masks(dense, masks)
    want, got = pruned.state_dict(), dense.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k  # every tensor, masked or not, equal bit for bit


def test_apply_after_an_optimizer_step_keeps_the_pruned_weights_zero(tmp_path):
    model = make_tiny()
    lins = [lin for b in mlp_blocks(model) for lin in (b.gate, b.up, b.down)]
    with torch.no_grad():
        for lin in lins:
            lin.weight[lin.weight.abs() < 0.2] = 0
    want = {id(lin): lin.weight == 0 for lin in lins}
    info = save_masks(model, tmp_path / "m.safetensors", lins, {"method": "magnitude", "ratio": 0.5})
    masks = load_masks(tmp_path / "m.safetensors", model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randint(0, 96, (2, 8)), labels=torch.randint(0, 96, (2, 8))).loss.backward()
    opt.step()
    assert all(int((lin.weight == 0).sum()) < int(want[id(lin)].sum()) for lin in lins)  # the step moved them
    apply_masks(model, masks)
    for lin in lins:
        assert torch.equal(lin.weight == 0, want[id(lin)])
    assert info["pruned"] == pytest.approx(sum(int(w.sum()) for w in want.values()) / sum(w.numel() for w in want.values()))


def test_packing_is_numpy_packbits_of_each_row():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(5, 13, generator=g) < 0.4
    bits = pack(m)
    assert bits.dtype == np.uint8 and bits.shape == (5, 2)
    assert bits[2, 0] == int("".join("1" if v else "0" for v in m[2, :8].tolist()), 2)  # big bit order
    assert torch.equal(unpack(bits, (5, 13)), m)
    with pytest.raises(UserError, match="does not pack"):
        unpack(bits, (5, 17))


def test_masks_for_another_model_or_a_damaged_file_are_one_clear_error(tmp_path):
    model = make_tiny()
    lins = [b.gate for b in mlp_blocks(model)]
    save_masks(model, tmp_path / "m.safetensors", lins, {"method": "magnitude"})
    with pytest.raises(UserError, match="weight .* but mask"):
        load_masks(tmp_path / "m.safetensors", make_tiny(inter=64))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UserError, match="not a readable mask file"):
        read_metadata(bad)


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import os

    model = make_tiny()
    path = tmp_path / "m.safetensors"
    save_masks(model, path, [mlp_blocks(model)[0].gate], {"method": "magnitude"})
    before = path.read_bytes()

    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(UserError, match="No space left"):
        save_masks(model, path, [b.gate for b in mlp_blocks(model)], {"method": "random"})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
