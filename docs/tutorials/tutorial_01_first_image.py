"""
# Restore your first image

A stub.
"""

import debcr

print(debcr.__version__)
