"""The card-fraud scenario: transactions, their simulator, features, labels, training and evaluation."""
