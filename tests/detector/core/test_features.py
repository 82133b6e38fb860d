from detector.core.features import PYTHON_CICFLOWMETER_SECONDS, Role, family_of, resolve_columns

ORIGINAL_HEADER = [
    " Destination Port",
    " Flow Duration",
    " Total Fwd Packets",
    " Total Backward Packets",
    "Total Length of Fwd Packets",
    " Fwd Header Length",
    " Bwd Header Length",
    " CWE Flag Count",
    " Avg Fwd Segment Size",
    " Fwd Header Length.1",
    "Init_Win_bytes_forward",
    " act_data_pkt_fwd",
    " min_seg_size_forward",
    " Label",
]


def test_original_cicids2017_names_with_spaces_and_duplicates_map_to_canonical():
    plan = resolve_columns(ORIGINAL_HEADER)
    assert {
        "Dst Port",
        "Flow Duration",
        "Total Fwd Packet",
        "Total Bwd packets",
        "Total Length of Fwd Packet",
        "CWR Flag Count",
        "Fwd Segment Size Avg",
        "FWD Init Win Bytes",
        "Fwd Act Data Pkts",
        "Fwd Seg Size Min",
    } <= set(plan.features)
    assert plan.features["Fwd Header Length"].source == " Fwd Header Length"
    assert plan.label == " Label"
    assert not plan.unknown


def test_a_repeated_column_is_a_duplicate_not_a_second_feature():
    plan = resolve_columns(["Flow Duration", "Fwd Header Length", " Fwd Header Length", "Label"])
    assert plan.features["Fwd Header Length"].source == "Fwd Header Length"
    assert plan.duplicates == (" Fwd Header Length",)


def test_a_second_label_column_is_a_duplicate_not_silently_dropped():
    plan = resolve_columns(["Flow Duration", "Label", " Label"])
    assert plan.label == "Label" and plan.duplicates == (" Label",)
    assert plan.secondary_labels == ()


def test_a_cic_file_keeps_its_label_even_beside_an_attack_cat_column():
    plan = resolve_columns(["Flow Duration", "Total Fwd Packet", "attack_cat", "Label"])
    assert plan.label == "Label" and plan.secondary_labels == ()
    unsw = resolve_columns(["dur", "spkts", "attack_cat", "label"])
    assert unsw.label == "attack_cat" and unsw.secondary_labels == ("label",)


def test_every_dialect_spelling_of_one_feature_is_the_same_feature():
    spellings = ["Total Fwd Packets", " Total Fwd Packets", "Total Fwd Packet", "Tot Fwd Pkts", "tot_fwd_pkts"]
    for name in spellings:
        assert resolve_columns([name]).features.keys() == {"Total Fwd Packet"}, name


def test_python_cicflowmeter_time_columns_are_converted_from_seconds():
    plan = resolve_columns(["flow_duration", "flow_iat_mean", "fwd_iat_tot", "idle_max", "tot_fwd_pkts", "flow_byts_s"])
    assert plan.features["Flow Duration"].scale == 1_000_000
    assert plan.features["Fwd IAT Total"].scale == 1_000_000
    assert plan.features["Idle Max"].scale == 1_000_000
    assert plan.features["Total Fwd Packet"].scale == 1
    assert plan.features["Flow Bytes/s"].scale == 1  # already per second
    assert "flow_duration" in PYTHON_CICFLOWMETER_SECONDS


def test_cic_csv_time_columns_stay_microseconds():
    plan = resolve_columns(["Flow Duration", "Flow IAT Mean"])
    assert plan.features["Flow Duration"].scale == 1
    assert plan.features["Flow IAT Mean"].scale == 1


def test_identifiers_are_flow_metadata_not_features():
    plan = resolve_columns(["Flow ID", "Src IP", "Src Port", "Dst IP", "Dst Port", "Timestamp", "Protocol", "id"])
    assert set(plan.features) == {"Dst Port", "Protocol"}  # destination port and protocol are both
    assert plan.flow_fields == {
        "flow_id": "Flow ID",
        "src_ip": "Src IP",
        "src_port": "Src Port",
        "dst_ip": "Dst IP",
        "dst_port": "Dst Port",
        "timestamp": "Timestamp",
        "protocol": "Protocol",
    }
    roles = {c.source: c.role for c in plan.columns}
    assert roles["Src IP"] is Role.FLOW
    assert roles["id"] is Role.IGNORED


def test_unsw_49_feature_names_map_to_partition_names_and_attack_cat_is_the_label():
    names = [
        "srcip",
        "sport",
        "dstip",
        "dsport",
        "proto",
        "state",
        "dur",
        "Sload",
        "Sintpkt",
        "smeansz",
        "res_bdy_len",
        "ct_src_ ltm",
        "Stime",
        "Ltime",
        "attack_cat",
        "label",
    ]
    plan = resolve_columns(names)
    assert {"dsport", "proto", "state", "dur", "sload", "sinpkt", "smean", "response_body_len", "ct_src_ltm"} == set(
        plan.features
    )
    assert plan.label == "attack_cat"
    assert plan.secondary_labels == ("label",)
    assert family_of(plan.features) == "unsw"


def test_unknown_columns_are_reported():
    plan = resolve_columns(["Flow Duration", "Mystery Column"])
    assert plan.unknown == ("Mystery Column",)
