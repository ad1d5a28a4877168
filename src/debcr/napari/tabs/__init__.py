"""The DeBCR dock's tabs, one module each: Transform data, Train model, Use model."""
