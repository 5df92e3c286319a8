"""The dashboard's Streamlit glue: the only klviz code that imports streamlit."""
