"""The app's browser components (st.components.v2): JavaScript and CSS files beside a thin Python wrapper each.

- `explorer`: the Exponents page's explorer — every slider input is recomputed in the browser.
- `scatter`: the Roles page's TF-vs-IDF scatter of every neuron (WebGL); a click opens that neuron.
- `watch`: the Prune and Search pages' run watcher — the tab polls the run store's change stamp (a file GET) and
  asks for a rerun only when it moved.

Both get an entry's neuron arrays and Plotly.js once per browser tab (`browser`). Streamlit code, so not in the
library (`neuronrank/` never imports streamlit); the numbers they show follow `neuronrank.views`, which a
browser test checks.
"""
