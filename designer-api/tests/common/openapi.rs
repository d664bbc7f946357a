//! A small OpenAPI response checker (the schemathesis-style check of the tests): finds the operation a
//! request hit by method and path template, requires the answer's status to be documented for it, and
//! validates the body against the documented media type and schema. The JSON Schema subset it knows is
//! what OpenAPI 3.0/3.1 documents use here: `$ref`, `type` (string or array, `null`), `nullable`,
//! `properties`, `required`, `additionalProperties`, `items`, `enum`, `const`, `oneOf`, `anyOf`,
//! `allOf`, `minimum`. An unknown keyword is ignored only if it cannot constrain a value (`format`,
//! `description`, `example`, ...); anything else fails the check, so the checker never passes a
//! schema it does not understand.

use serde_json::{Map, Value};

pub struct Spec {
    doc: Value,
}

const IGNORED: &[&str] = &[
    "description",
    "example",
    "examples",
    "format",
    "title",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "externalDocs",
    "xml",
    "discriminator",
    "contentMediaType",
    "propertyNames",
];

impl Spec {
    pub fn new(doc: Value) -> Spec {
        Spec { doc }
    }

    /// The template and operation of `method path` (path without query); the template with the most
    /// literal segments wins, as in the router.
    pub fn operation(&self, method: &str, path: &str) -> Option<(String, &Value)> {
        let method = method.to_ascii_lowercase();
        let segments: Vec<&str> = path.split('/').collect();
        let mut best: Option<(usize, String, &Value)> = None;
        for (template, item) in self.doc["paths"].as_object()? {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut literal = 0;
            let matches = parts.iter().zip(&segments).all(|(part, segment)| {
                if part.starts_with('{') && part.ends_with('}') {
                    !segment.is_empty()
                } else {
                    literal += 1;
                    part == segment
                }
            });
            let Some(operation) = item.get(&method) else { continue };
            if matches && best.as_ref().is_none_or(|(n, _, _)| literal > *n) {
                best = Some((literal, template.clone(), operation));
            }
        }
        best.map(|(_, template, operation)| (template, operation))
    }

    /// Checks one answer against the document.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<String, String> {
        let (template, operation) = self
            .operation(method, path)
            .ok_or_else(|| format!("{method} {path} is not in the OpenAPI document"))?;
        let responses = &operation["responses"];
        let response = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .ok_or_else(|| format!("{method} {template}: status {status} is not documented"))?;
        let response = self.resolve(response)?;
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return if body.is_empty() {
                Ok(template)
            } else {
                Err(format!("{method} {template} {status}: a body, but the document says none"))
            };
        };
        if body.is_empty() && status == 204 {
            return Ok(template);
        }
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let entry = content.get(media).ok_or_else(|| {
            format!(
                "{method} {template} {status}: content type '{media}' is not documented ({:?})",
                content.keys().collect::<Vec<_>>()
            )
        })?;
        if media == "application/json" {
            no_duplicate_keys(body).map_err(|e| format!("{method} {template} {status}: {e}"))?;
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| format!("{method} {template} {status}: not JSON: {e}"))?;
            if let Some(schema) = entry.get("schema") {
                self.validate(schema, &value, "$")
                    .map_err(|e| format!("{method} {template} {status}: {e}\nbody: {value}"))?;
            }
        }
        Ok(template)
    }

    fn resolve<'a>(&'a self, value: &'a Value) -> Result<&'a Value, String> {
        let mut value = value;
        for _ in 0..32 {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else { return Ok(value) };
            let pointer = reference.strip_prefix('#').ok_or_else(|| format!("external $ref {reference}"))?;
            value = self.doc.pointer(pointer).ok_or_else(|| format!("dangling $ref {reference}"))?;
        }
        Err("$ref cycle".to_owned())
    }

    /// Validates `value` against `schema`; the error names the JSON path.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        let Some(object) = schema.as_object() else {
            return match schema {
                Value::Bool(true) => Ok(()),
                _ => Err(format!("{at}: schema {schema} admits nothing")),
            };
        };
        let nullable = object.get("nullable").and_then(Value::as_bool).unwrap_or(false);
        if nullable && value.is_null() {
            return Ok(());
        }
        for (keyword, constraint) in object {
            match keyword.as_str() {
                "$ref" | "nullable" | "properties" | "additionalProperties" | "items" => {}
                "type" => check_type(constraint, value, at)?,
                "required" => {
                    if let Some(value) = value.as_object() {
                        for name in constraint.as_array().into_iter().flatten().filter_map(Value::as_str) {
                            if !value.contains_key(name) {
                                return Err(format!("{at}: required property '{name}' is missing"));
                            }
                        }
                    }
                }
                "enum" => {
                    if !constraint.as_array().is_some_and(|options| options.contains(value)) {
                        return Err(format!("{at}: {value} is not one of {constraint}"));
                    }
                }
                "const" => {
                    if constraint != value {
                        return Err(format!("{at}: {value} is not {constraint}"));
                    }
                }
                "minimum" => {
                    if let (Some(min), Some(n)) = (constraint.as_f64(), value.as_f64()) {
                        if n < min {
                            return Err(format!("{at}: {n} is below the minimum {min}"));
                        }
                    }
                }
                "allOf" => {
                    for sub in constraint.as_array().into_iter().flatten() {
                        self.validate(sub, value, at)?;
                    }
                }
                "anyOf" | "oneOf" => {
                    let options = constraint.as_array().cloned().unwrap_or_default();
                    let n_ok = options.iter().filter(|sub| self.validate(sub, value, at).is_ok()).count();
                    let ok = if keyword == "oneOf" { n_ok == 1 } else { n_ok >= 1 };
                    if !ok {
                        let errors: Vec<String> =
                            options.iter().filter_map(|sub| self.validate(sub, value, at).err()).collect();
                        return Err(format!("{at}: {n_ok} of the {keyword} options match: {errors:?}"));
                    }
                }
                other if IGNORED.contains(&other) => {}
                other => return Err(format!("{at}: the checker does not know the keyword '{other}'")),
            }
        }
        if let Some(fields) = value.as_object() {
            self.validate_object(object, fields, at)?;
        }
        if let (Some(items), Some(values)) = (object.get("items"), value.as_array()) {
            for (i, item) in values.iter().enumerate() {
                self.validate(items, item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }

    fn validate_object(
        &self,
        schema: &Map<String, Value>,
        fields: &Map<String, Value>,
        at: &str,
    ) -> Result<(), String> {
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            let path = format!("{at}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(property) => self.validate(property, field, &path)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{path}: not allowed (additionalProperties: false)"))
                    }
                    Some(Value::Bool(true)) | None => {}
                    Some(additional) => self.validate(additional, field, &path)?,
                },
            }
        }
        Ok(())
    }
}

fn check_type(constraint: &Value, value: &Value, at: &str) -> Result<(), String> {
    let types: Vec<&str> = match constraint {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => return Err(format!("{at}: odd type {constraint}")),
    };
    let fits = |kind: &str| match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        _ => false,
    };
    if types.iter().any(|kind| fits(kind)) {
        Ok(())
    } else {
        Err(format!("{at}: {value} is not of type {constraint}"))
    }
}

/// Fails when a JSON object in `body` repeats a key (serde's `flatten` can write one twice, and most
/// parsers then silently keep one of them).
pub fn no_duplicate_keys(body: &[u8]) -> Result<(), String> {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    struct Checked;

    impl<'de> Deserialize<'de> for Checked {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
            deserializer.deserialize_any(CheckedVisitor)
        }
    }

    struct CheckedVisitor;

    impl<'de> Visitor<'de> for CheckedVisitor {
        type Value = Checked;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }

        fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_unit<E>(self) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
            while seq.next_element::<Checked>()?.is_some() {}
            Ok(Checked)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
            let mut keys = std::collections::BTreeSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !keys.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!("duplicate key '{key}'")));
                }
                map.next_value::<Checked>()?;
            }
            Ok(Checked)
        }
    }

    serde_json::from_slice::<Checked>(body).map(|_| ()).map_err(|error| error.to_string())
}
