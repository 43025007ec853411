"""The paper's metrics and attacks written out again, in a few lines of numpy and scikit-learn each, for the
tests that recompute what the trials logged (tests/test_wiring.py, test_search.py): deliberately not the
product's code (analysis/), so a bug there or in how it is wired cannot agree with itself. Every
function takes the forget classes explicitly."""
import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC


def accuracy(logits, labels):
    return 100.0 * np.mean(logits.argmax(axis=1) == labels)


def true_class_probability(logits, labels):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z[np.arange(len(labels)), labels]) / np.exp(z).sum(axis=1)


def svm_mia(train_logits, train_labels, test_logits, test_labels, forget):
    """Kodge et al.'s attack: an RBF SVM (C=3, gamma auto) on the true class's probability, fitted on the
    train retain (1) vs train forget (0) samples, predicting the test forget samples; 100 = all "non-member"."""
    return 100.0 * (1.0 - svm_member_predictions(train_logits, train_labels, test_logits, test_labels, forget).mean())


def svm_member_predictions(train_logits, train_labels, test_logits, test_labels, forget):
    """svm_mia's SVM prediction for each test forget sample (in test order): 1 = "member"."""
    train_p = true_class_probability(train_logits, train_labels)[:, None]
    is_forget = np.isin(train_labels, forget)
    classifier = SVC(C=3, gamma="auto", kernel="rbf").fit(train_p, (~is_forget).astype(int))
    test_p = true_class_probability(test_logits, test_labels)[np.isin(test_labels, forget)][:, None]
    return classifier.predict(test_p)


def class_attack(logits, labels, forget, candidate):
    """A_c: an RBF SVM (balanced) on the standardised logit z_c, fitted on the retained classes' test
    samples (class c vs the others), predicting the forget samples: % of them it calls class c."""
    return 100.0 * class_attack_predictions(logits, labels, forget, candidate).mean()


def class_attack_predictions(logits, labels, forget, candidate):
    """class_attack's prediction for each forget sample (in test order): 1 = "class `candidate`"."""
    is_forget = np.isin(labels, forget)
    feature = logits[:, [candidate]]
    classifier = make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight="balanced"))
    classifier.fit(feature[~is_forget], (labels[~is_forget] == candidate).astype(int))
    return classifier.predict(feature[is_forget])


def reference(retrain_logits, labels, forget):
    """c* and A_c* over the Retrain models (A_c averaged over them; the lowest class wins a tie), {c: A_c}."""
    scores = {c: float(np.mean([class_attack(z, labels, forget, c) for z in retrain_logits]))
              for c in range(retrain_logits[0].shape[1]) if c not in forget}
    best = max(scores, key=lambda c: (scores[c], -c))
    return best, scores[best], scores


def log_odds(logits, labels):
    """U-LiRA's φ = log p_y − log(1 − p_y) = z_y − log Σ_{k≠y} exp z_k."""
    z = logits.astype(np.float64)
    rows = np.arange(len(labels))
    others = z.copy()
    others[rows, labels] = -np.inf
    return z[rows, labels] - np.log(np.exp(others).sum(axis=1))


def auc(positives, negatives):
    """P(a positive scores above a negative), ties half: the Mann-Whitney statistic."""
    above = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return 100.0 * above / (len(positives) * len(negatives))


def ulira(in_phi, out_phi, min_std=1e-3):
    """Leave-one-out over every pair (held-out in model i, out model j): per-sample Gaussians fitted on the
    other models (mean per sample; std pooled over samples, floored), the log likelihood ratio of the
    held-out models' φ, "in" when > 0. Mean accuracy and AUC over the pairs."""
    def fit(scores):
        variance = scores.var(axis=0, ddof=1).mean() if len(scores) > 1 else 0.0
        return scores.mean(axis=0), max(np.sqrt(variance), min_std)

    def log_pdf(phi, mean, std):
        return -0.5 * ((phi - mean) / std) ** 2 - np.log(std)
    k = len(in_phi)
    accuracies, aucs = [], []
    for i in range(k):
        for j in range(k):
            fit_in, fit_out = fit(np.delete(in_phi, i, axis=0)), fit(np.delete(out_phi, j, axis=0))
            in_llr = log_pdf(in_phi[i], *fit_in) - log_pdf(in_phi[i], *fit_out)
            out_llr = log_pdf(out_phi[j], *fit_in) - log_pdf(out_phi[j], *fit_out)
            accuracies.append(100.0 * (np.sum(in_llr > 0) + np.sum(out_llr <= 0)) / (2 * len(in_llr)))
            aucs.append(auc(in_llr, out_llr))
    return np.mean(accuracies), np.mean(aucs)
