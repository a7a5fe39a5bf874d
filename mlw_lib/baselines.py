"""Reference classifiers beside the networks (not multilevel): what a simple, strong method
reaches on the same split."""

from __future__ import annotations

from collections.abc import Sequence


def tfidf_logistic_regression(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    test_texts: Sequence[str],
    test_labels: Sequence[int],
) -> float:
    """Test accuracy of TF-IDF (word 1- and 2-grams, sublinear tf, in >= 2 training texts)
    + logistic regression (C = 1), fitted on the training texts only. Fixed settings: nothing
    is tuned, on the test set or otherwise."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform(train_texts)
    classifier = LogisticRegression(C=1.0, max_iter=1000).fit(features, train_labels)
    return float(classifier.score(vectorizer.transform(test_texts), test_labels))
