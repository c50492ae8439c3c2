use serde_json::json;

use super::*;

fn fields() -> Fields {
    Fields::parse(&json!({"revision": "1", "properties": {
        "text": {"type": "SINGLE_LINE_TEXT", "code": "text", "label": "件名"},
        "num": {"type": "NUMBER", "code": "num", "label": "金額"},
        "date": {"type": "DATE", "code": "date", "label": "日付"},
        "dt": {"type": "DATETIME", "code": "dt", "label": "日時"},
        "time": {"type": "TIME", "code": "time", "label": "時刻"},
        "dd": {"type": "DROP_DOWN", "code": "dd", "label": "区分", "options": {"A": {"label": "A", "index": "0"}, "B": {"label": "B", "index": "1"}}},
        "cb": {"type": "CHECK_BOX", "code": "cb", "label": "タグ", "options": {"赤": {"label": "赤", "index": "0"}, "青": {"label": "青", "index": "1"}}},
        "user": {"type": "USER_SELECT", "code": "user", "label": "担当"},
        "calc": {"type": "CALC", "code": "calc", "label": "計算"},
        "table": {"type": "SUBTABLE", "code": "table", "fields": {
            "item": {"type": "SINGLE_LINE_TEXT", "code": "item", "label": "品名"},
            "qty": {"type": "NUMBER", "code": "qty", "label": "数量"}
        }}
    }}))
    .unwrap()
}

/// Converts one field's value: Ok(kintone value) or Err(message).
fn one(code: &str, v: serde_json::Value) -> Result<serde_json::Value, String> {
    let mut record = Map::new();
    record.insert(code.into(), v);
    convert_record(&fields(), &record).map(|r| r[code]["value"].clone()).map_err(|e| e.to_string())
}

#[test]
fn conversions_by_type() {
    let ok = [
        ("text", json!(12), json!("12")),
        ("text", json!("山田 \"特急\""), json!("山田 \"特急\"")),
        ("num", json!(1200), json!("1200")),
        ("num", json!("1,200"), json!("1200")),
        ("num", json!("１２．５"), json!("12.5")),
        ("num", json!(""), json!("")),
        ("date", json!("2026/11/22"), json!("2026-11-22")),
        ("date", json!("2026年11月22日"), json!("2026-11-22")),
        ("date", json!("R8.11.22"), json!("2026-11-22")),
        ("date", json!(""), json!(null)),
        ("dt", json!("2026-11-22 10:30"), json!("2026-11-22T01:30:00Z")),
        ("dt", json!("2026-11-22T10:30:00+09:00"), json!("2026-11-22T01:30:00Z")),
        ("time", json!("9:05"), json!("09:05")),
        ("time", json!("10時30分"), json!("10:30")),
        ("dd", json!("B"), json!("B")),
        ("dd", json!(""), json!(null)),
        ("cb", json!(["赤", "青"]), json!(["赤", "青"])),
        ("cb", json!("赤, 青"), json!(["赤", "青"])),
        ("cb", json!("赤、青"), json!(["赤", "青"])),
        ("user", json!("sato"), json!([{"code": "sato"}])),
        ("user", json!(["sato", "suzuki"]), json!([{"code": "sato"}, {"code": "suzuki"}])),
        ("user", json!([{"code": "sato", "name": "佐藤"}]), json!([{"code": "sato"}])),
        (
            "table",
            json!([{"item": "りんご", "qty": 3}, {"id": "41", "value": {"item": "みかん", "qty": "１０"}}]),
            json!([{"value": {"item": {"value": "りんご"}, "qty": {"value": "3"}}}, {"id": "41", "value": {"item": {"value": "みかん"}, "qty": {"value": "10"}}}]),
        ),
    ];
    for (code, input, want) in ok {
        assert_eq!(one(code, input.clone()), Ok(want), "{code} {input}");
    }
}

#[test]
fn values_that_do_not_fit_name_field_value_and_reason() {
    let bad = [
        ("num", json!("abc"), "field `num` (`金額`): value \"abc\" is not a number"),
        ("date", json!("2026-02-30"), "field `date` (`日付`): value \"2026-02-30\" is not a date"),
        ("dd", json!("C"), "field `dd` (`区分`): value \"C\" is not one of the choices (A, B)"),
        ("cb", json!("赤,緑"), "field `cb` (`タグ`): value \"赤,緑\" is not one of the choices (赤, 青)"),
        ("calc", json!(1), "field `calc` (`計算`): value 1 cannot be written: CALC is a read-only field"),
        ("nope", json!("x"), "field `nope`: value \"x\" cannot be written: the app has no field with this code"),
        ("text", json!({"a": 1}), "field `text` (`件名`): value {\"a\":1} is a list or a map, not text"),
        (
            "table",
            json!([{"qty": "many"}]),
            "field `table`: value [{\"qty\":\"many\"}] field `table[1].qty` (`数量`): value \"many\" is not a number",
        ),
    ];
    for (code, input, want) in bad {
        assert_eq!(one(code, input.clone()), Err(want.to_owned()), "{code} {input}");
    }
}
