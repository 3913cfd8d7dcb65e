"""NeuronRank Studio — Streamlit entry point (minimal until the app pages land)."""

import streamlit as st

from neuronrank import models, store

st.set_page_config(page_title="NeuronRank Studio", layout="wide")
st.title("NeuronRank Studio")
st.write(f"Default model: `{models.DEFAULT_MODEL}`. Cached statistics entries:")
entries = store.list_entries()
if entries:
    st.dataframe([{"key": e.key, "model": e.params.get("model"), "calib": e.params.get("calib"),
                   "nsamples": e.params.get("nsamples"), "seqlen": e.params.get("seqlen"),
                   "site": e.params.get("site")} for e in entries])
else:
    st.info("No statistics yet: run `python -m neuronrank stats` to compute them.")
