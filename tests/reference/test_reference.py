#!/usr/bin/env python3
"""SASRec against its reference implementations, by test (ctest: test_reference).

1. Weight transplant into the PyTorch port (../shared/bench/torch_reference.py,
   loaded from there, never copied): our initial weights go into its model
   (attention output projection = identity with zero bias and frozen, key bias
   zero, positions shifted to its 1-based padded layout), dropout off; the
   features, logits, BCE loss, every parameter's gradient and every parameter
   after one Adam step must match ours. The port has pre-LN blocks only.
2. The authors' TensorFlow block (kang205/SASRec model.py, modules.py),
   written out below in float64 from its equations, not from our code:
   forward and gradients of norm paper, pre and post on a padded batch.

Ours comes from tests/model_dump.cpp (sasrec_model_dump): one training step
of the library's model, written as raw tensors with a manifest.

Exit 77 (ctest: skipped) with one line when python3-torch is missing; the
transplant cases skip with one line when the port file is absent.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import unittest

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"SKIP: the reference tests need python3-torch and python3-numpy ({e}); "
          f"install them (bash tools/dev.sh deps) or run with a python that has them")
    sys.exit(77)

ARGS = None  # --dump, --port


def run_dump(folder, **options):
    """Runs sasrec_model_dump into `folder`; returns (manifest, {name: tensor})."""
    cmd = [ARGS.dump, folder]
    for k, v in options.items():
        if v is True:
            cmd.append("--" + k)
        elif v is not False:
            cmd += ["--" + k, str(v)]
    subprocess.run(cmd, check=True)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    tensors = {}
    for name, e in manifest["tensors"].items():
        a = np.fromfile(os.path.join(folder, e["file"]), dtype=e["dtype"]).reshape(e["shape"])
        tensors[name] = torch.from_numpy(a.copy())
    return manifest, tensors


def params_of(tensors, prefix):
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


class Close:
    """max |a - b| <= rtol * max |b| + atol, naming the tensor and the first bad index."""

    @staticmethod
    def check(test, name, ours, ref, rtol, atol=0.0):
        ours = ours.double()
        ref = ref.double()
        test.assertEqual(tuple(ours.shape), tuple(ref.shape), name)
        diff = (ours - ref).abs()
        tol = rtol * float(ref.abs().max()) + atol
        worst = float(diff.max()) if diff.numel() else 0.0
        if worst > tol:
            index = np.unravel_index(int(diff.argmax()), tuple(diff.shape))
            test.fail(f"{name}: max |ours - reference| = {worst:.3e} > {tol:.3e} at {tuple(int(i) for i in index)} "
                      f"(ours {float(ours[index]):.6g}, reference {float(ref[index]):.6g})")


# ---- 1. the PyTorch port ---------------------------------------------------------------

def load_port():
    path = ARGS.port
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location("torch_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PORT = None


def port_names(cfg):
    """Our parameter name -> (port parameter name, how ours sits in it)."""
    d = cfg["hidden"]
    m = {"item.weight": ("item.weight", lambda t: t),
         "position.weight": ("pos.weight", lambda t: t[1:]),  # row 0: its padding position
         "final_ln.weight": ("ln.weight", lambda t: t), "final_ln.bias": ("ln.bias", lambda t: t)}
    for b in range(cfg["blocks"]):
        o = f"blocks.{b}."
        m[o + "ln_attn.weight"] = (f"ln_a.{b}.weight", lambda t: t)
        m[o + "ln_attn.bias"] = (f"ln_a.{b}.bias", lambda t: t)
        m[o + "ln_ffn.weight"] = (f"ln_f.{b}.weight", lambda t: t)
        m[o + "ln_ffn.bias"] = (f"ln_f.{b}.bias", lambda t: t)
        for i, x in enumerate("qkv"):
            m[o + f"attn.{x}.weight"] = (f"att.{b}.in_proj_weight", lambda t, i=i: t[i * d:(i + 1) * d])
        m[o + "attn.q.bias"] = (f"att.{b}.in_proj_bias", lambda t: t[:d])
        m[o + "attn.v.bias"] = (f"att.{b}.in_proj_bias", lambda t: t[2 * d:])
        for w, c in (("w1", "c1"), ("w2", "c2")):
            m[o + f"ffn.{w}.weight"] = (f"ffn.{b}.{c}.weight", lambda t: t.squeeze(-1))
            m[o + f"ffn.{w}.bias"] = (f"ffn.{b}.{c}.bias", lambda t: t)
    return m


def transplant(ours, cfg):
    """The port's model holding our weights; the pieces we do not have are set so they do nothing."""
    d = cfg["hidden"]
    port = PORT.SASRec(cfg["items"], d, cfg["maxlen"], cfg["blocks"], cfg["heads"], 0.0)
    named = dict(port.named_parameters())
    with torch.no_grad():
        for p in named.values():
            p.fill_(float("nan"))  # whatever is not written below shows up
        named["pos.weight"][0].zero_()
        for b in range(cfg["blocks"]):
            named[f"att.{b}.in_proj_bias"].zero_()  # the key bias stays 0
            named[f"att.{b}.out_proj.weight"].copy_(torch.eye(d))
            named[f"att.{b}.out_proj.bias"].zero_()
            named[f"att.{b}.out_proj.weight"].requires_grad_(False)
            named[f"att.{b}.out_proj.bias"].requires_grad_(False)
        for ours_name, (port_name, view) in port_names(cfg).items():
            view(named[port_name]).copy_(view_shape(ours[ours_name], view(named[port_name])))
    return port, named


def view_shape(src, dst):
    return src.reshape(dst.shape)


def port_step(port, tensors):
    """The port's training step on our batch (its main(): BCEWithLogits means, Adam(0.9, 0.98))."""
    seq, pos, neg = tensors["seq"], tensors["pos"], tensors["neg"]
    h = port.feats(seq)
    pl = (h * port.item(pos)).sum(-1)
    nl = (h * port.item(neg)).sum(-1)
    m = pos != 0
    bce = torch.nn.BCEWithLogitsLoss()
    loss = bce(pl[m], torch.ones_like(pl[m])) + bce(nl[m], torch.zeros_like(nl[m]))
    loss.backward()
    return h, pl, nl, loss


class TransplantIntoPort(unittest.TestCase):  # skipped by main() when the port file is absent
    def run_case(self, padded):
        with tempfile.TemporaryDirectory() as tmp:
            manifest, t = run_dump(tmp, norm="pre", hidden=8, heads=2, blocks=2, maxlen=6, items=30, batch=5,
                                   padded=padded, seed=3)
        cfg = manifest["config"]
        port, named = transplant(params_of(t, "param/"), cfg)
        h, pl, nl, loss = port_step(port, t)
        return manifest, t, cfg, port, named, h, pl, nl, loss

    def test_pre_norm_same_function_loss_gradients_and_step(self):
        manifest, t, cfg, port, named, h, pl, nl, loss = self.run_case(padded=False)
        Close.check(self, "features", t["features"], h.detach(), 0, 1e-5)
        Close.check(self, "pos_logits", t["pos_logits"], pl.detach(), 0, 1e-5)
        Close.check(self, "neg_logits", t["neg_logits"], nl.detach(), 0, 1e-5)
        self.assertAlmostEqual(manifest["loss"], float(loss), delta=1e-6)
        grads = params_of(t, "grad/")
        mapping = port_names(cfg)
        self.assertEqual(set(mapping), set(grads), "every parameter of ours is compared")
        for name, (port_name, view) in mapping.items():
            Close.check(self, "grad " + name, grads[name], view_shape(view(named[port_name].grad), grads[name]), 1e-4)
        # The key bias we leave out has a zero gradient in the port (to float32 noise).
        scale = max(float(g.abs().max()) for g in grads.values())
        for b in range(cfg["blocks"]):
            kb = named[f"att.{b}.in_proj_bias"].grad[cfg["hidden"]:2 * cfg["hidden"]]
            self.assertLess(float(kb.abs().max()), 1e-5 * scale, f"block {b}: key-bias gradient")
        # One Adam step (ours: make_optimizer's FusedAdam), the same parameters after it.
        opt = torch.optim.Adam([p for p in port.parameters() if p.requires_grad], lr=cfg["lr"],
                               betas=(cfg["beta1"], cfg["beta2"]))
        opt.step()
        after = params_of(t, "after/")
        for name, (port_name, view) in mapping.items():
            Close.check(self, "after step " + name, after[name], view_shape(view(named[port_name].detach()), after[name]),
                        0, 2e-6)

    def test_padded_rows_differ_only_where_the_port_attends_to_padding(self):
        # The port masks future keys but not padding keys: rows with padding
        # see them (design.md); full rows must still agree exactly.
        manifest, t, cfg, port, named, h, pl, nl, loss = self.run_case(padded=True)
        full_rows = (t["seq"] != 0).all(1)
        self.assertTrue(bool(full_rows.any()) and not bool(full_rows.all()))
        Close.check(self, "features of full rows", t["features"][full_rows], h.detach()[full_rows], 0, 1e-5)
        items = t["seq"] != 0
        padded_items = items & ~full_rows.unsqueeze(1)
        gap = float((t["features"] - h.detach())[padded_items].abs().max())
        self.assertGreater(gap, 1e-2, "the port's padding keys should change the padded rows")


# ---- 2. the authors' TensorFlow equations, float64 -------------------------------------

def tf_normalize(x, gamma, beta, eps=1e-8):
    """modules.normalize: (x - mean) / sqrt(var + eps) * gamma + beta, moments over the last axis."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * gamma + beta


def tf_attention(queries, keys, w, heads, key_padding):
    """modules.multihead_attention with causality=True and dropout off, WITHOUT its residual.

    Q from the queries, K and V from the keys; the key mask is TF's (keys whose
    entries are all 0), or `key_padding` where the keys are not the raw input
    (pre, post: LN of a padding row is not 0)."""
    B, T, d = queries.shape
    dh = d // heads
    Q = queries @ w["q.weight"].T + w["q.bias"]
    K = keys @ w["k.weight"].T + w.get("k.bias", 0.0)
    V = keys @ w["v.weight"].T + w["v.bias"]
    split = lambda x: x.view(B, T, heads, dh).transpose(1, 2)  # heads: column groups, tf.split on axis 2
    scores = split(Q) @ split(K).transpose(-1, -2) / dh ** 0.5  # [B,H,T,T]
    key_is_real = keys.abs().sum(-1) != 0 if key_padding is None else ~key_padding
    very_negative = torch.tensor(-2.0 ** 32 + 1, dtype=scores.dtype)
    scores = torch.where(key_is_real[:, None, None, :], scores, very_negative)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    scores = torch.where(causal, scores, very_negative)
    weights = torch.softmax(scores, -1)
    query_is_real = (queries.abs().sum(-1) != 0).to(weights.dtype)  # TF's query masking
    weights = weights * query_is_real[:, None, :, None]
    return (weights @ split(V)).transpose(1, 2).reshape(B, T, d)


def tf_feedforward(x, w):
    """modules.feedforward without its residual: conv1d(relu) -> conv1d, kernel size 1."""
    return torch.relu(x @ w["w1.weight"].T + w["w1.bias"]) @ w["w2.weight"].T + w["w2.bias"]


def tf_model(p, seq, cfg, norm):
    """model.Model's forward with dropout off: features [B,T,d]."""
    d, heads = cfg["hidden"], cfg["heads"]
    B, T = seq.shape
    assert T == cfg["maxlen"]  # the TF code always feeds maxlen-wide, left-padded inputs
    mask = (seq != 0).to(torch.float64).unsqueeze(-1)
    table = torch.cat([torch.zeros(1, d, dtype=torch.float64), p["item.weight"][1:]])  # zero_pad=True
    x = table[seq] * d ** 0.5 + p["position.weight"][torch.arange(T)]  # scale=True; positions 0..T-1
    x = x * mask
    padding = seq == 0
    for b in range(cfg["blocks"]):
        w = {k[len(f"blocks.{b}.attn."):]: v for k, v in p.items() if k.startswith(f"blocks.{b}.attn.")}
        f = {k[len(f"blocks.{b}.ffn."):]: v for k, v in p.items() if k.startswith(f"blocks.{b}.ffn.")}
        ln1 = lambda z: tf_normalize(z, p[f"blocks.{b}.ln_attn.weight"], p[f"blocks.{b}.ln_attn.bias"])
        ln2 = lambda z: tf_normalize(z, p[f"blocks.{b}.ln_ffn.weight"], p[f"blocks.{b}.ln_ffn.bias"])
        if norm == "paper":  # the authors' block: LN on the query only, residual from it
            q = ln1(x)
            y = tf_attention(q, x, w, heads, None) + q
            z = ln2(y)
            x = tf_feedforward(z, f) + z
        elif norm == "pre":
            h = ln1(x)
            y = x + tf_attention(h, h, w, heads, padding)
            x = y + tf_feedforward(ln2(y), f)
        else:  # post
            y = ln1(x + tf_attention(x, x, w, heads, padding))
            x = ln2(y + tf_feedforward(y, f))
        x = x * mask  # self.seq *= mask
    return tf_normalize(x, p["final_ln.weight"], p["final_ln.bias"])


def tf_loss(p, features, pos, neg):
    """model.Model's loss: the BCE terms summed over the targets / their count (l2_emb = 0)."""
    table = torch.cat([torch.zeros(1, features.shape[-1], dtype=torch.float64), p["item.weight"][1:]])
    pl = (table[pos] * features).sum(-1)
    nl = (table[neg] * features).sum(-1)
    target = (pos != 0).to(torch.float64)
    loss = (-torch.log(torch.sigmoid(pl) + 1e-24) * target - torch.log(1 - torch.sigmoid(nl) + 1e-24) * target).sum()
    return loss / target.sum(), pl, nl


def tf_step(ours, t, cfg, norm, extra=None):
    p = {k: v.double().clone().requires_grad_(True) for k, v in ours.items()}
    if extra:
        p.update({k: v.clone().requires_grad_(True) for k, v in extra.items()})
    features = tf_model(p, t["seq"], cfg, norm)
    loss, pl, nl = tf_loss(p, features, t["pos"], t["neg"])
    loss.backward()
    return p, features, loss, pl, nl


class TensorFlowEquations(unittest.TestCase):
    def check_norm(self, norm):
        with tempfile.TemporaryDirectory() as tmp:
            manifest, t = run_dump(tmp, norm=norm, hidden=8, heads=2, blocks=2, maxlen=7, items=40, batch=6,
                                   padded=True, seed=11)
        cfg = manifest["config"]
        ours = params_of(t, "param/")
        p, features, loss, pl, nl = tf_step(ours, t, cfg, norm)
        items = t["seq"] != 0
        Close.check(self, norm + " features", t["features"][items], features.detach()[items], 1e-5, 1e-6)
        Close.check(self, norm + " pos_logits", t["pos_logits"][items], pl.detach()[items], 1e-5, 1e-6)
        Close.check(self, norm + " neg_logits", t["neg_logits"][items], nl.detach()[items], 1e-5, 1e-6)
        self.assertAlmostEqual(manifest["loss"], float(loss), delta=1e-6 * max(1.0, float(loss)))
        grads = params_of(t, "grad/")
        self.assertEqual(set(grads), set(ours))
        for name, g in grads.items():
            Close.check(self, f"{norm} grad {name}", g, p[name].grad, 1e-4, 1e-9)

    def test_paper_block(self):
        self.check_norm("paper")

    def test_pre_block(self):
        self.check_norm("pre")

    def test_post_block(self):
        self.check_norm("post")

    def test_key_bias_changes_nothing(self):
        # What leaving the key bias out costs (design.md): q.(k + b) shifts a
        # whole softmax row by q.b, so features and every other gradient are
        # the same with any key bias, and its own gradient is 0.
        with tempfile.TemporaryDirectory() as tmp:
            manifest, t = run_dump(tmp, norm="paper", padded=True, seed=5)
        cfg = manifest["config"]
        ours = params_of(t, "param/")
        g = torch.Generator().manual_seed(0)
        bias = {f"blocks.{b}.attn.k.bias": torch.randn(cfg["hidden"], generator=g, dtype=torch.float64)
                for b in range(cfg["blocks"])}
        p0, f0, l0, _, _ = tf_step(ours, t, cfg, "paper")
        p1, f1, l1, _, _ = tf_step(ours, t, cfg, "paper", bias)
        items = t["seq"] != 0
        Close.check(self, "features with a key bias", f1.detach()[items], f0.detach()[items], 1e-12)
        for name in ours:
            Close.check(self, "grad with a key bias " + name, p1[name].grad, p0[name].grad, 1e-10, 1e-14)
        for name in bias:
            self.assertLess(float(p1[name].grad.abs().max()), 1e-12, name)


def main():
    global ARGS, PORT
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True, help="the sasrec_model_dump binary")
    ap.add_argument("--port", required=True, help="torch_reference.py (the PyTorch port)")
    ARGS, rest = ap.parse_known_args()
    PORT = load_port()
    if PORT is None:
        print(f"SKIP (transplant only): {ARGS.port} is absent; the float64 TensorFlow-equation tests still run")
    torch.set_num_threads(1)
    TransplantIntoPort.__unittest_skip__ = PORT is None
    TransplantIntoPort.__unittest_skip_why__ = f"{ARGS.port} is absent"
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
