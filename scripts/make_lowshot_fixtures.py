"""Writes Tests/Fixtures/lowshot/logistic.safetensors: small random feature sets (centred and L2-normalised per
row, as MSN's evaluation preprocesses them) and what scikit-learn's LogisticRegression (multinomial, L2, no
intercept, C = 1/λ, which minimises Σ CE + λ/2 ‖W‖², solved to 1e-10) finds, for the Swift solver to match.
"""
import json
from pathlib import Path

import numpy as np
import sklearn
from safetensors.numpy import save_file
from sklearn.linear_model import LogisticRegression

OUT = Path(__file__).resolve().parent.parent / "Tests" / "Fixtures" / "lowshot"


def preprocess(x):
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tensors, cases = {}, []
    for name, (n, d, classes, lam) in {"few": (10, 16, 5, 0.0025), "more": (60, 24, 4, 0.1)}.items():
        centres = rng.normal(size=(classes, d))
        labels = np.repeat(np.arange(classes), n // classes)
        x = preprocess(centres[labels] + 0.8 * rng.normal(size=(n, d))).astype(np.float32)
        test = preprocess(centres[np.arange(200) % classes] + 0.8 * rng.normal(size=(200, d))).astype(np.float32)
        model = LogisticRegression(C=1 / lam, fit_intercept=False, tol=1e-10, max_iter=10000).fit(x.astype(np.float64), labels)
        tensors.update({f"{name}.x": x, f"{name}.labels": labels.astype(np.int64), f"{name}.test": test,
                        f"{name}.coef": np.ascontiguousarray(model.coef_, dtype=np.float32),  # coef_ is Fortran-ordered
                        f"{name}.predictions": model.predict(test.astype(np.float64)).astype(np.int64)})
        cases.append(dict(name=name, classes=classes, lambd=lam))
    save_file(tensors, OUT / "logistic.safetensors")
    (OUT / "cases.json").write_text(json.dumps(dict(sklearn=sklearn.__version__, cases=cases), indent=1))


if __name__ == "__main__":
    main()
