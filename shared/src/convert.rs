//! Conversions between protobuf well-known types and plain Rust values:
//! `Struct` ↔ JSON object, `Timestamp` ↔ `chrono`, `Duration` ↔ `std`.
//!
//! Domain conversions (wire message → validated domain value) live with the
//! code that owns the domain; these are the shared leaf conversions.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use serde_json::{Map, Number, Value as Json};

/// A JSON object (a map), the shape of task input and results.
pub type JsonObject = Map<String, Json>;

/// Converts a protobuf `Struct` into a JSON object.
pub fn struct_to_json(message: prost_types::Struct) -> JsonObject {
    message.fields.into_iter().map(|(key, value)| (key, value_to_json(value))).collect()
}

/// Converts a JSON object into a protobuf `Struct`.
pub fn json_to_struct(object: JsonObject) -> prost_types::Struct {
    prost_types::Struct { fields: object.into_iter().map(|(key, value)| (key, json_to_value(value))).collect() }
}

fn value_to_json(value: prost_types::Value) -> Json {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(flag)) => Json::Bool(flag),
        Some(Kind::NumberValue(number)) => number_to_json(number),
        Some(Kind::StringValue(text)) => Json::String(text),
        Some(Kind::ListValue(list)) => Json::Array(list.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(inner)) => Json::Object(struct_to_json(inner)),
    }
}

/// Keeps whole numbers whole (protobuf only has doubles), so `3` does not come back as `3.0`.
fn number_to_json(number: f64) -> Json {
    const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
    if number.fract() == 0.0 && number.abs() < EXACT_INTEGER_LIMIT {
        #[allow(clippy::cast_possible_truncation)]
        return Json::Number(Number::from(number as i64));
    }
    Number::from_f64(number).map_or(Json::Null, Json::Number)
}

fn json_to_value(value: Json) -> prost_types::Value {
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(flag) => Kind::BoolValue(flag),
        Json::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or(0.0)),
        Json::String(text) => Kind::StringValue(text),
        Json::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.into_iter().map(json_to_value).collect() })
        }
        Json::Object(object) => Kind::StructValue(json_to_struct(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Converts a `chrono` time into a protobuf `Timestamp`.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Converts a protobuf `Timestamp` into a `chrono` time; `None` when out of range.
pub fn from_timestamp(stamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(stamp.seconds, u32::try_from(stamp.nanos).ok()?)
}

/// Converts a `std` duration into a protobuf `Duration` (saturating).
pub fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(value.subsec_nanos()).unwrap_or(0),
    }
}

/// Converts a protobuf `Duration` into a `std` one; `None` when negative or malformed.
pub fn from_duration(value: &prost_types::Duration) -> Option<Duration> {
    let seconds = u64::try_from(value.seconds).ok()?;
    let nanos = u32::try_from(value.nanos).ok()?;
    (nanos < 1_000_000_000).then(|| Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_objects_survive_a_trip_through_struct() {
        let original = json!({
            "ok": true, "count": 3, "ratio": 0.5, "name": "x",
            "nested": {"list": [1, "two", null, {"deep": false}]}
        });
        let Json::Object(object) = original.clone() else { unreachable!() };
        let back = struct_to_json(json_to_struct(object));
        assert_eq!(Json::Object(back), original);
    }

    #[test]
    fn durations_round_trip_and_negative_ones_are_refused() {
        let value = Duration::from_millis(1500);
        assert_eq!(from_duration(&duration(value)), Some(value));
        assert_eq!(from_duration(&prost_types::Duration { seconds: -1, nanos: 0 }), None);
    }

    #[test]
    fn timestamps_round_trip() {
        let now = Utc::now();
        assert_eq!(from_timestamp(&timestamp(now)), Some(now));
    }
}
