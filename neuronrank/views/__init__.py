"""What the app's pages show, computed (numpy and pandas, no torch, no streamlit): the statistics cache
and an entry (entries.py), the Exponents page (explorer.py), the Roles page (roles.py, unembed.py), the
run history and sweeps (history.py)."""
