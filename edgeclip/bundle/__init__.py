"""The bundle format's one home: read and verify (`read`), write and amend (`write`). Format: docs/bundle.md."""
from edgeclip.bundle.read import (FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, TOWERS, Bundle, BundleError, load_bundle,
                                  sha256_file, verify_files)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_NAME", "TOWERS", "Bundle", "BundleError", "load_bundle",
           "sha256_file", "verify_files"]
