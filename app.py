"""NeuronRank Studio — the Streamlit entry point: page navigation and the shared sidebar.

Run with `streamlit run app.py` (or `bash scripts/app.sh`). Pages live in app_pages/ (not pages/: Streamlit
treats a folder of that name as old-style pages);
their list, in navigation order, is `ui.pages()` (add new pages there: the "Prune & evaluate" page has
its place marked). Computation lives in neuronrank/ and never imports streamlit.
"""

import streamlit as st

import ui

ui.page_config()  # wide; the sidebar collapsed in presentation mode

pg = st.navigation(ui.pages())
ui.sidebar()  # drawn on every page, before the page itself
with ui.pages_of_app():
    pg.run()
ui.watch_settle()  # the Prune / Search watch: the runs this run queued itself are part of what it drew
