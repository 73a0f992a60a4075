"""Query strategies: the ``query=`` family of the annotation assistant (active learning).

Each answers ``tlkit_query_scores(probs, features)`` with one score per unlabelled sample; the
assistant asks a person about the highest-scoring samples first. Third parties add theirs the
same way (an entry point in the ``tlkit`` group, or ``tlkit.register`` in a cell).
"""
