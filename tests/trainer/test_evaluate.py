from trainer.evaluate import classification_metrics, markdown_table

CLASSES = ("BENIGN", "DDoS", "Portscan")


def test_attack_vs_benign_rates():
    truth = ["BENIGN"] * 4 + ["DDoS"] * 2 + ["Portscan"] * 2
    predicted = ["BENIGN", "BENIGN", "BENIGN", "DDoS", "Portscan", "DDoS", "BENIGN", "Portscan"]
    binary = classification_metrics(truth, predicted, CLASSES, "BENIGN")["binary"]
    assert binary == {"attacks": 4, "benign": 4, "detection_rate": 0.75, "false_alarm_rate": 0.25}


def test_a_rate_without_rows_to_compute_it_on_is_none_not_zero():
    benign_only = classification_metrics(["BENIGN"] * 3, ["BENIGN", "DDoS", "BENIGN"], CLASSES, "BENIGN")
    assert benign_only["binary"]["detection_rate"] is None
    assert benign_only["binary"]["false_alarm_rate"] == 1 / 3
    attacks_only = classification_metrics(["DDoS"] * 2, ["DDoS", "DDoS"], CLASSES, "BENIGN")
    assert attacks_only["binary"]["false_alarm_rate"] is None
    assert "detection rate n/a on 0 attacks" in markdown_table(benign_only, "Evaluated rows")


def test_a_label_the_model_never_saw_is_reported_with_its_support_and_zero_recall():
    truth = ["BENIGN", "BENIGN", "DDoS", "Heartbleed", "Heartbleed"]
    predicted = ["BENIGN", "BENIGN", "DDoS", "BENIGN", "DDoS"]
    metrics = classification_metrics(truth, predicted, CLASSES, "BENIGN")
    assert metrics["labels"] == [*CLASSES, "Heartbleed"]
    heartbleed = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.6, "support": 2}
    assert metrics["per_class"]["Heartbleed"] == heartbleed
    assert metrics["confusion_matrix"][-1] == [1, 1, 0, 0]
    assert sum(row["support"] for row in metrics["per_class"].values()) == len(truth)
    assert "| Heartbleed | 0.0000 | 0.0000 | 0.0000 | 0.6000 | 2 |" in markdown_table(metrics, "Evaluated rows")


def test_per_class_accuracy_is_one_vs_rest_as_the_paper_reports_it():
    # DDoS: 1 hit, 1 missed (predicted Portscan), 1 benign flow called DDoS -> 2 wrong of 8 rows
    truth = ["BENIGN"] * 4 + ["DDoS"] * 2 + ["Portscan"] * 2
    predicted = ["BENIGN", "BENIGN", "BENIGN", "DDoS", "Portscan", "DDoS", "BENIGN", "Portscan"]
    per_class = classification_metrics(truth, predicted, CLASSES, "BENIGN")["per_class"]
    assert per_class["DDoS"]["accuracy"] == 6 / 8
    assert per_class["BENIGN"]["accuracy"] == 6 / 8  # one benign flow missed, one Portscan called benign
    assert per_class["Portscan"]["accuracy"] == 6 / 8
