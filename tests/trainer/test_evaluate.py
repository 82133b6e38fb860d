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
