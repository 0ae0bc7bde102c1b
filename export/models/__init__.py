"""Model builders for edgeclip export (torch); import submodules directly."""
