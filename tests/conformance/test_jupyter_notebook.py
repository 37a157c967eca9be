"""A whole notebook (issue 11): tests/conformance/notebooks/comparison.ipynb (several cells, two
failing, a PNG plot and an HTML table) executed by nbclient with allow_errors=True through a
gateway kernel — jupyter_server's own GatewayKernelManager / GatewayKernelClient with GatewayClient
pointed at the kernel gateway under test (corral by default) — and again by nbclient on a local
ipykernel; the outputs a notebook shows must agree."""

import base64
import copy
import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(__file__), "notebooks", "comparison.ipynb")
CELL_TIMEOUT = 60
STARTUP_TIMEOUT = 60
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def jupyter_environment(tmp_path, monkeypatch):
    """Jupyter's and IPython's files under a temp dir, for the local kernel too."""
    for variable, folder in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
    ]:
        path = tmp_path / folder
        path.mkdir()
        monkeypatch.setenv(variable, str(path))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    return tmp_path


def read_notebook():
    with open(NOTEBOOK) as file:
        return nbformat.read(file, as_version=4)


def run_with_gateway(gateway_url):
    from jupyter_server.gateway.gateway_client import GatewayClient
    from jupyter_server.gateway.managers import GatewayKernelManager

    GatewayClient.clear_instance()
    GatewayClient.instance(url=gateway_url, request_timeout=STARTUP_TIMEOUT)
    try:
        notebook = read_notebook()
        client = NotebookClient(
            notebook, km=GatewayKernelManager(), timeout=CELL_TIMEOUT, startup_timeout=STARTUP_TIMEOUT,
            allow_errors=True, kernel_name="python3",
        )
        client.execute()
        return notebook
    finally:
        GatewayClient.clear_instance()


def run_locally():
    notebook = read_notebook()
    NotebookClient(
        notebook, timeout=CELL_TIMEOUT, startup_timeout=STARTUP_TIMEOUT, allow_errors=True,
        kernel_name="python3",
    ).execute()
    return notebook


def coalesced(outputs):
    """Consecutive stream outputs of one stream joined (kernels may split a print in two)."""
    merged = []
    for output in outputs:
        if (output["output_type"] == "stream" and merged and merged[-1]["output_type"] == "stream"
                and merged[-1]["name"] == output["name"]):
            merged[-1]["text"] += output["text"]
        else:
            merged.append(copy.deepcopy(output))
    return merged


def shown(outputs):
    """What a notebook shows for a cell's outputs, as comparable values."""
    view = []
    for output in coalesced(outputs):
        kind = output["output_type"]
        if kind == "stream":
            view.append((kind, output["name"], output["text"]))
        elif kind in ("execute_result", "display_data"):
            view.append((kind, tuple(sorted(output["data"])), output["data"].get("text/plain")))
        elif kind == "error":
            view.append((kind, output["ename"], output["evalue"]))
        else:
            view.append((kind,))
    return view


def pngs(notebook):
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                found.append(base64.b64decode(output["data"]["image/png"]))
    return found


def test_notebook_through_the_gateway_matches_local_ipykernel(kernel_gateway, jupyter_environment):
    remote = run_with_gateway(kernel_gateway.base_url)
    local = run_locally()

    remote_cells = [cell for cell in remote.cells if cell.cell_type == "code"]
    local_cells = [cell for cell in local.cells if cell.cell_type == "code"]
    assert len(remote_cells) == len(local_cells) == 9
    for index, (ours, theirs) in enumerate(zip(remote_cells, local_cells)):
        assert shown(ours.outputs) == shown(theirs.outputs), f"code cell {index}: {ours.source!r}"
        assert ours.execution_count == theirs.execution_count == index + 1

    # What the notebook is meant to show, so that two equally wrong runs cannot pass.
    by_source = {cell.source.splitlines()[0]: shown(cell.outputs) for cell in remote_cells}
    assert by_source["x = 21"] == [("stream", "stdout", "x is 21\n")]
    assert by_source["import sys"] == [
        ("stream", "stderr", "to stderr\n"), ("execute_result", ("text/plain",), "42")]
    assert by_source["{'missing': undefined_name}"] == [
        ("error", "NameError", "name 'undefined_name' is not defined")]
    assert by_source["print('after the error, x is still', x)"] == [
        ("stream", "stdout", "after the error, x is still 21\n")]
    assert by_source["int('not a number')"] == [
        ("error", "ValueError", "invalid literal for int() with base 10: 'not a number'")]
    assert by_source["def squares(n):"] == [
        ("stream", "stdout", "line 0\nline 1\nline 2\n"),
        ("execute_result", ("text/plain",), "[0, 1, 4, 9, 16]")]
    table = by_source["import pandas as pd"]
    assert table[0][:2] == ("execute_result", ("text/html", "text/plain"))
    plot = by_source["import matplotlib.pyplot as plt"]
    assert [entry[:2] for entry in plot] == [("display_data", ("image/png", "text/plain"))]
    assert by_source["display(frame.head(1))"][0][:2] == ("display_data", ("text/html", "text/plain"))
    assert by_source["display(frame.head(1))"][1] == ("execute_result", ("text/plain",), "'done'")
    for notebook in (remote, local):
        images = pngs(notebook)
        assert len(images) == 1 and images[0].startswith(PNG_MAGIC)
    errors = [cell.outputs[0] for cell in remote_cells if cell.outputs and cell.outputs[0]["output_type"] == "error"]
    assert all(error["traceback"] for error in errors)
