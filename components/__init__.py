"""The app's browser components (st.components.v2): JavaScript and CSS files beside a thin Python wrapper each.

- `explorer`: the Exponents page's explorer — every slider input is recomputed in the browser.
- `scatter`: the Roles page's TF-vs-IDF scatter of every neuron (WebGL); a click opens that neuron.

Both get an entry's neuron arrays and Plotly.js once per browser tab (`browser`). Streamlit code, so not in the
library (`neuronrank/` never imports streamlit); the numbers they show follow `neuronrank.views`, which a
browser test checks.
"""
