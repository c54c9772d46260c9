"""TorchScript sides measured: eager vs .pt (traced, scripted), .pt vs ONNX (both exporters), planted trace
bugs, and the real Silero VAD jit vs its shipped ONNX files. Prints README rows; run from the repo root:
``PYTHONPATH=$PWD python bench/torchscript.py``."""
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

import diffcore

warnings.filterwarnings("ignore")
sys.path.insert(0, os.getcwd())
import silero_vad

from tests.integration.test_torchscript_layers import Gate, Heads, Net, _x
from tests.integration.test_torchscript_silero import Vad16k, _chunk

d = tempfile.mkdtemp()
def row(name, ref, test, feeds):
    t = time.time(); r = diffcore.compare(ref, test, feeds); el = time.time() - t
    vals = [x.rel_l2 for x in r.layers + r.outputs if x.rel_l2 is not None and x.rel_l2 == x.rel_l2]
    fd = r.first_divergence.name if r.first_divergence else "-"
    print(f"| {name} | {r.coverage['layers']['paired']}/{r.coverage['layers']['total']} | {r.verdict.upper()} (first: {fd}) | {max(vals)*100:.3g} % | {el:.1f} s |")
def save(m, ex, script=False):
    p = os.path.join(d, f"m{time.time_ns()}.pt")
    torch.jit.save(torch.jit.script(m) if script else torch.jit.trace(m, (ex,)), p); return p
eager = Net(torch.nn.GELU()).eval(); ex = torch.from_numpy(_x())
tp, sp = save(eager, ex), save(eager, ex, True)
row("eager vs traced .pt", eager, tp, {"x": _x()})
row("eager vs scripted .pt", eager, sp, {"x": _x()})
for dyn in (False, True):
    o = os.path.join(d, f"m{dyn}.onnx"); torch.onnx.export(eager, (ex,), o, input_names=["x"], dynamo=dyn)
    row(f"traced .pt vs ONNX ({'dynamo' if dyn else 'torchscript'} exporter)", tp, o, {"x": _x()})
g = Net(Gate()).eval()
with torch.no_grad(): g.embed.bias.fill_(5.0)
gp = save(g, ex); tr = torch.jit.load(gp)
with torch.no_grad(): g.embed.bias.fill_(-5.0); tr.embed.bias.fill_(-5.0)
torch.jit.save(tr, gp)
row("eager vs traced .pt, Python branch baked", g, gp, {"x": _x()})
h = Net(Heads()).eval(); hp = save(h, torch.from_numpy(_x(16)))
row("eager vs traced .pt, seq 16 baked, run at 32", h, hp, {"x": _x(32)})
sd = os.path.join(os.path.dirname(silero_vad.__file__), "data")
vp = os.path.join(d, "vad16k.pt")
torch.jit.save(torch.jit.script(Vad16k(torch.jit.load(os.path.join(sd, "silero_vad.jit")))), vp)
feeds = {"input": _chunk(), "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
row("Silero silero_vad.jit vs silero_vad_16k_op15.onnx", vp, os.path.join(sd, "silero_vad_16k_op15.onnx"), feeds)
row("Silero silero_vad.jit vs silero_vad.onnx", vp, os.path.join(sd, "silero_vad.onnx"), feeds)
