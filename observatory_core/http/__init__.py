"""HTTP routes served beside the Streamlit UI by the same server (DESIGN.md section 7)."""
