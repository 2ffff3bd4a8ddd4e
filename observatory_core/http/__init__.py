"""HTTP routes served beside the Streamlit UI by the same server (docs/architecture.md, "Data flow")."""
