"""nbval re-runs the book's notebooks (``pytest notebooks/ --nbval-lax ...``, see README.md).

Each notebook's kernel gets one CPU thread: the stored outputs were computed that way (the thread
count changes the order of floating-point reductions, so it can move a seeded result), and two
threads gain nothing for these small models on a shared 2-core CI machine.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"
