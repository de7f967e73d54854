"""Mamba's CPU selective scan (the fused C loop and the torch one) against the transformers
reference: values, gradients, thread counts, unsafe inputs, the build and its fallback, and the
model using it."""

from __future__ import annotations

import copy

import pytest
import torch
from test_model import TINY_MAMBA, data, tokenizer_json  # noqa: F401 (fixtures)
from test_training import _layout_and_seqs

from dmlm.model.backbone import build_backbone
from dmlm.model.batches import collate

torch.set_num_threads(1)


@pytest.fixture(params=["fused", "torch"])
def scan_impl(request, monkeypatch):
    """Each CPU scan in turn, installed as the default: the fused C one (which must build here:
    set-up installs gcc) and the PyTorch one."""
    from dmlm.model import cscan, mamba_scan

    if request.param == "fused":
        assert cscan.library() is not None, "the fused CPU scan did not build (see the log)"
    else:
        monkeypatch.setattr(mamba_scan, "selective_scan", mamba_scan.pytorch_selective_scan)
    yield request.param
    monkeypatch.undo()
    mamba_scan.install()  # transformers' Mamba back on the default scan


@pytest.mark.parametrize("length", [1, 7, 16, 37])
def test_cpu_mamba_scan_equals_the_transformers_reference(length, scan_impl):
    """Values, last state and every gradient, against transformers' sequential PyTorch scan."""
    from dmlm.model import mamba_scan

    def run(scan):
        g = torch.Generator().manual_seed(length)
        b, d, n = 2, 6, 4
        xs = [
            torch.randn(b, d, length, generator=g),  # hidden_states
            torch.randn(b, d, length, generator=g),  # dt (before bias and softplus)
            -2 * torch.rand(d, n, generator=g),  # A
            torch.randn(b, n, length, generator=g),  # B
            torch.randn(b, n, length, generator=g),  # C
            torch.randn(d, generator=g),  # D
            torch.randn(b, d, length, generator=g),  # z
            torch.randn(d, generator=g),  # delta_bias
        ]
        for x in xs:
            x.requires_grad_()
        y, last = scan(*xs[:5], D=xs[5], z=xs[6], delta_bias=xs[7], delta_softplus=True, return_last_state=True)
        probe = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
        ((y * probe).sum() + (last**2).sum()).backward()
        return y, last, [x.grad for x in xs]

    ours, ref = run(mamba_scan.selective_scan), run(mamba_scan.reference())
    assert torch.allclose(ours[0], ref[0], atol=1e-5) and torch.allclose(ours[1], ref[1], atol=1e-5)
    for i, (a, b) in enumerate(zip(ours[2], ref[2])):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), i


@pytest.mark.parametrize("length", [1, 4, 5, 16, 37])
def test_cpu_mamba_scan_without_gradients_gives_the_same_values(length, scan_impl):
    """Decoding's scan (no states kept, shorter reused chunks) equals the training forward and the
    transformers reference, across chunk boundaries."""
    from dmlm.model import mamba_scan

    g = torch.Generator().manual_seed(length)
    b, d, n = 3, 5, 4
    xs = [torch.randn(b, d, length, generator=g), torch.randn(b, d, length, generator=g),
          -2 * torch.rand(d, n, generator=g), torch.randn(b, n, length, generator=g),
          torch.randn(b, n, length, generator=g)]
    kw = dict(D=torch.randn(d, generator=g), z=torch.randn(b, d, length, generator=g), delta_softplus=True,
              return_last_state=True)
    with torch.no_grad():
        y, last = mamba_scan.selective_scan(*xs, **kw)
        ref_y, ref_last = mamba_scan.reference()(*xs, **kw)
    trained = [x.clone().requires_grad_() for x in xs]
    train_y, train_last = mamba_scan.selective_scan(*trained, **kw)
    assert torch.equal(y, train_y.detach()) and torch.equal(last, train_last.detach())
    assert torch.allclose(y, ref_y, atol=1e-5) and torch.allclose(last, ref_last, atol=1e-5)
    assert last.abs().sum() > 0


def test_fused_scan_is_the_same_on_any_thread_count_and_both_scans_agree():
    """Rows split across threads give bit-identical values and gradients (determinism), and the
    fused scan equals the PyTorch one at a training shape (state 16, chunk boundaries crossed)."""
    from dmlm.model import mamba_scan

    g = torch.Generator().manual_seed(0)
    b, d, n, length = 5, 24, 16, 41
    xs = [torch.randn(b, d, length, generator=g), torch.randn(b, d, length, generator=g) - 1,
          -4 * torch.rand(d, n, generator=g), torch.randn(b, n, length, generator=g),
          torch.randn(b, n, length, generator=g)]

    def run(fused: bool, threads: int):
        before, inputs = torch.get_num_threads(), [x.clone().requires_grad_() for x in xs]
        torch.set_num_threads(threads)
        try:
            y, last = mamba_scan.selective_scan(*inputs, delta_softplus=True, return_last_state=True, fused=fused)
            (y.sin().sum() + last.sum()).backward()
        finally:
            torch.set_num_threads(before)
        return [y, last] + [x.grad for x in inputs]

    one, three, torch_scan = run(True, 1), run(True, 3), run(False, 1)
    for a, b_, c in zip(one, three, torch_scan):
        assert torch.equal(a, b_)
        assert torch.allclose(a, c, rtol=1e-4, atol=1e-4)


def test_fused_scan_refuses_what_its_c_loop_cannot_read_safely():
    from dmlm.model import cscan

    L, B, D, N = 3, 2, 4, 5
    delta, x = torch.rand(L, B, D), torch.randn(L, B, D)
    A, Bm, C = -torch.rand(D, N), torch.randn(L, B, N), torch.randn(L, B, N)
    cscan.forward(delta, x, A, Bm, C, keep_states=False)  # fine
    with pytest.raises(ValueError, match="contiguous fp32"):
        cscan.forward(delta, x, A.t().contiguous().t(), Bm, C, keep_states=False)
    with pytest.raises(ValueError, match="contiguous fp32"):
        cscan.forward(delta.double(), x.double(), A, Bm, C, keep_states=False)
    with pytest.raises(ValueError, match="shapes disagree"):
        cscan.forward(delta, x, A, Bm[:, :, :-1], C, keep_states=False)


def test_fused_scan_without_a_compiler_falls_back_with_a_warning(monkeypatch, caplog):
    from dmlm.model import cscan

    monkeypatch.setenv("CC", "no-such-compiler")
    cscan.library.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="dmlm.model.cscan"):
            assert cscan.library() is None
    finally:
        monkeypatch.delenv("CC")
        cscan.library.cache_clear()
    assert "no C compiler" in caplog.text


def test_fused_scan_builds_into_the_cache_folder_atomically(monkeypatch, tmp_path):
    """A fresh cache folder gets one library, named by its build key, and nothing half-written."""
    from dmlm.model import cscan

    monkeypatch.setenv("DMLM_CACHE", str(tmp_path))
    cscan.library.cache_clear()
    try:
        assert cscan.library() is not None
    finally:
        cscan.library.cache_clear()
    built = list(tmp_path.iterdir())
    assert len(built) == 1 and built[0].name.startswith("selective_scan-") and built[0].suffix == ".so"


def test_mamba_model_uses_the_cpu_scan_and_matches_the_reference(tokenizer_json, data, scan_impl):
    from transformers.models.mamba import modeling_mamba

    from dmlm.model import mamba_scan

    layout, seqs = _layout_and_seqs(tokenizer_json, data)
    torch.manual_seed(0)
    model = build_backbone(TINY_MAMBA, layout.vocab_size, "m").train()
    assert modeling_mamba.mamba_selective_scan is mamba_scan.selective_scan
    ids, w, _ = collate(seqs, [0, 1, 2, 3])
    ref_model = copy.deepcopy(model)
    for layer in ref_model.backbone.layers:
        layer.mixer.use_mambapy = False  # the reference: transformers' sequential scan
    from dmlm.model.objective import weighted_loss

    loss = weighted_loss(model, ids, w)
    loss.backward()
    modeling_mamba.mamba_selective_scan = mamba_scan.reference()
    try:
        ref_loss = weighted_loss(ref_model, ids, w)
        ref_loss.backward()
    finally:
        mamba_scan.install()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-5), name
