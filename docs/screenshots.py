"""Make the screenshots the README links (docs/*.png), as a new user would see them.

    python docs/screenshots.py [--chromium /usr/bin/chromium]

notebook.png: docs/notebook.ipynb (a comparison in a notebook: the report's HTML view, the first divergence,
the table as a DataFrame, the plot) executed with nbclient, exported with nbconvert and shown in Chromium.

model-explorer.png: a 3-block MLP exported to ONNX with one weight planted wrong (blocks.1.down x1.5),
compared with diffcore, its node data (``write_model_explorer``) opened in Model Explorer (the
``model-explorer`` server with the model-explorer-onnx adapter), all layers expanded, zoomed on the first
divergence. Needs: ai-edge-model-explorer, model-explorer-onnx, playwright (its Python package only:
it drives the system's Chromium, no browser download); for the notebook nbclient, nbformat, ipykernel,
nbconvert, pandas and matplotlib.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def planted_model(folder: Path):
    """(torch model, path of its ONNX export with a planted bug, inputs)."""
    import onnx
    import torch
    from onnx import numpy_helper

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.act = torch.nn.Linear(8, 16), torch.nn.GELU()
            self.down, self.norm = torch.nn.Linear(16, 8), torch.nn.LayerNorm(8)

        def forward(self, x):
            return self.norm(x + self.down(self.act(self.up(x))))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.Sequential(*[Block() for _ in range(3)])
            self.head = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.head(self.blocks(x))

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 8)
    path = folder / "net.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], opset_version=17)
    bad = onnx.load(str(path))
    node = next(n for n in bad.graph.node if n.op_type == "Gemm" and "blocks.1/down" in n.name)
    weight = next(t for t in bad.graph.initializer if t.name == node.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(bad, str(folder / "net_bug.onnx"))
    return model, folder / "net_bug.onnx", {"x": x.numpy()}


def _server(model: Path, node_data: str, port: int):
    exe = Path(sys.executable).with_name("model-explorer")
    cmd = [str(exe), str(model), "--extensions=model_explorer_onnx", f"--node_data_paths={node_data}",
           "--no_open_in_browser", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _url(server) -> str:
    deadline = time.time() + 60
    while time.time() < deadline:
        line = server.stdout.readline()
        if "?data=" in line:
            return line.strip()
    raise RuntimeError("the Model Explorer server printed no URL")


def model_explorer_shot(chromium: str, out: Path) -> None:
    import diffcore
    from diffcore.report.model_explorer import write_model_explorer
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        model, bad, inputs = planted_model(Path(tmp))
        report = diffcore.compare(model, str(bad), inputs)
        data = write_model_explorer(report, str(bad), Path(tmp) / "drift.json")["drift"]
        server = _server(bad, data, 8093)
        try:
            url = _url(server)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.goto(url)
                page.wait_for_timeout(12000)       # the adapter converts the model, then the graph renders
                page.mouse.click(379, 76)          # toolbar: "Expand all layers in the graph"
                page.wait_for_timeout(3000)
                page.get_by_placeholder("Search nodes/layers by regex").fill("blocks.1/down")
                page.keyboard.press("Enter")
                page.wait_for_timeout(2000)
                page.mouse.click(77, 236)          # the Gemm search result: locate (zoom to) the node
                page.wait_for_timeout(3000)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            server.terminate()
    print(f"wrote {out}: {report.summary}")


NOTEBOOK_CELLS = [
    "import diffcore\nfrom diffcore.demo import overflowing_transformer\n\n"
    "model = overflowing_transformer()            # a small transformer; its final RMSNorm squares in float16\n"
    "inputs = {k: v.numpy() for k, v in model.example_inputs().items()}\n"
    "report = diffcore.compare(model, model, inputs, test_dtype=\"float16\")\nreport",
    "report.first_divergence",
    "report.to_dataframe().head(6)",
    "report.plot();",
]


def notebook_shot(chromium: str, out: Path) -> None:
    """Execute docs/notebook.ipynb, export it to HTML and screenshot the page."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter
    from playwright.sync_api import sync_playwright

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK_CELLS])
    NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    nbformat.write(notebook, str(HERE / "notebook.ipynb"))
    html, _ = HTMLExporter().from_notebook_node(notebook)
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "notebook.html"
        page_path.write_text(html, encoding="utf-8")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(page_path.as_uri())
            page.wait_for_timeout(2000)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    print(f"wrote {out} and {HERE / 'notebook.ipynb'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--only", choices=("notebook", "model-explorer"))
    args = parser.parse_args(argv)
    if args.only != "model-explorer":
        notebook_shot(args.chromium, HERE / "notebook.png")
    if args.only != "notebook":
        model_explorer_shot(args.chromium, HERE / "model-explorer.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
