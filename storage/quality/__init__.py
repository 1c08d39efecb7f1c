"""Quality engine: agreement, rater scores, competence and consensus as pure functions over judgment tables.

Import from the modules (``storage.quality.agreement`` ...): each pulls in only the scientific libraries it needs,
so the studio can score consensus without loading statsmodels or scikit-learn.
"""
