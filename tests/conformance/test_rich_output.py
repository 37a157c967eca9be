"""Rich results through the native API with real libraries from the test venv: a matplotlib
figure comes back as PNG, a pandas DataFrame as HTML."""

import base64

TIMEOUT = 120
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def new_session(server):
    response = server.http.post(server.url("/v1/sessions"), json={}, timeout=TIMEOUT)
    assert response.status_code == 201
    return response.json()["id"]


def run(server, session_id, code):
    response = server.http.post(
        server.url(f"/v1/sessions/{session_id}/executions"), json={"code": code}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok", body
    return body


def test_matplotlib_figure_is_png(server):
    session_id = new_session(server)
    body = run(
        server,
        session_id,
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3], [1, 4, 9])\nfig",
    )
    png = base64.b64decode(body["result"]["image/png"])
    assert png.startswith(PNG_MAGIC)
    assert "text/plain" in body["result"]
    displays = [item for item in body["outputs"] if item["type"] == "display"]
    assert displays == [], "the figure returned as the result is not shown twice"


def test_open_pyplot_figures_are_displayed(server):
    session_id = new_session(server)
    body = run(server, session_id, "import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.title('t');")
    displays = [item for item in body["outputs"] if item["type"] == "display"]
    assert len(displays) == 1
    assert base64.b64decode(displays[0]["data"]["image/png"]).startswith(PNG_MAGIC)
    body = run(server, session_id, "len(plt.get_fignums())")
    assert body["result"]["text/plain"] == "0", "figures are closed once shown"


def test_pandas_dataframe_is_html(server):
    session_id = new_session(server)
    body = run(server, session_id, "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    assert "<table" in body["result"]["text/html"]
    assert "a" in body["result"]["text/plain"] and "x" in body["result"]["text/plain"]


def test_display_of_a_dataframe(server):
    session_id = new_session(server)
    body = run(server, session_id, "import pandas as pd\ndisplay(pd.DataFrame({'n': [1]}))")
    displays = [item for item in body["outputs"] if item["type"] == "display"]
    assert "<table" in displays[0]["data"]["text/html"]
