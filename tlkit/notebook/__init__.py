"""The notebook layer: %tlkit magics, the training dashboard, live plots, the annotation assistant."""
