"""napari plugin of debcr: the "DeBCR" dock widget, an NPZ reader/writer and sample data.

Registered through ``napari.yaml`` (npe2). Nothing here imports torch at import time, so
napari starts and lists plugins quickly; models load in worker threads when first needed.
"""
