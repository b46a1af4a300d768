//! How the interfaces read values off the wire (HTTP JSON, Python objects
//! through serde): integers as JSON Schema defines them and JSON values with
//! a bound on their size. [`SearchOptions`](crate::SearchOptions) and the
//! server's request types read their fields with these.

/// JSON integers as the OpenAPI (JSON Schema) defines them: a number with
/// no fractional part, so `132.0` is 132; fractions, negatives and values
/// beyond 2^53 are refused.
pub mod int {
    use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

    /// A non-negative integer.
    pub struct Int<T>(pub T);

    struct V<T>(std::marker::PhantomData<T>);

    impl<T: TryFrom<u64>> V<T> {
        fn of<E: de::Error>(&self, v: u64, unexpected: Unexpected) -> Result<Int<T>, E> {
            T::try_from(v).map(Int).map_err(|_| E::invalid_value(unexpected, self))
        }
    }

    impl<T: TryFrom<u64>> Visitor<'_> for V<T> {
        type Value = Int<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a non-negative integer")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int<T>, E> {
            self.of(v, Unexpected::Unsigned(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int<T>, E> {
            let u = u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))?;
            self.of(u, Unexpected::Signed(v))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int<T>, E> {
            if v.fract() != 0.0 || !(0.0..=9_007_199_254_740_992.0).contains(&v) {
                return Err(E::invalid_value(Unexpected::Float(v), &self));
            }
            self.of(v as u64, Unexpected::Float(v))
        }
    }

    impl<'de, T: TryFrom<u64>> Deserialize<'de> for Int<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(V(std::marker::PhantomData))
        }
    }

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        Ok(Int::<usize>::deserialize(d)?.0)
    }

    pub fn opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        Ok(Option::<Int<usize>>::deserialize(d)?.map(|i| i.0))
    }

    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        Ok(Vec::<Int<u64>>::deserialize(d)?.into_iter().map(|i| i.0).collect())
    }
}

/// JSON values read with a bound on how many values they hold, checked as
/// they are read: a request cannot make the server build a huge tree (a
/// 63 MB array of 31 million numbers is about 1 GB as `serde_json::Value`).
pub mod bounded {
    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};
    use std::cell::Cell;

    /// A value of at most [`crate::MAX_FILTER_VALUES`] values.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Bounded(pub Value);

    impl<'de> serde::Deserialize<'de> for Bounded {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let left = Cell::new(crate::MAX_FILTER_VALUES);
            Seed(&left).deserialize(d).map(Bounded)
        }
    }

    struct Seed<'a>(&'a Cell<usize>);

    impl Seed<'_> {
        fn take<E: de::Error>(&self) -> Result<(), E> {
            match self.0.get() {
                0 => Err(E::custom(format!(
                    "a filter or payload holds more than {} JSON values",
                    crate::MAX_FILTER_VALUES
                ))),
                n => {
                    self.0.set(n - 1);
                    Ok(())
                }
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Value;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            self.take()?;
            Ok(Value::Null)
        }

        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            self.visit_unit()
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            self.take()?;
            Ok(Value::Bool(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            self.take()?;
            Ok(v.into())
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            self.take()?;
            Ok(v.into())
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            self.take()?;
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            self.take()?;
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            self.take()?;
            Ok(Value::String(v))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            self.take()?;
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Seed(self.0))? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            self.take()?;
            let mut out = Map::new();
            while let Some(k) = map.next_key::<String>()? {
                let v = map.next_value_seed(Seed(self.0))?;
                out.insert(k, v);
            }
            Ok(Value::Object(out))
        }
    }
}

pub use bounded::Bounded;

/// A boolean, and only a boolean: a reader that would take any value as
/// true or false (Python's truthiness, through pythonize) is asked for a
/// value of any type, so `"false"` or `1` is refused as JSON refuses it.
pub fn boolean<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = bool;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a boolean")
        }

        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
    }
    d.deserialize_any(V)
}

/// The field names serde reads for the struct `T`, as its derive declares
/// them (what an interface's schema must list).
pub fn struct_fields<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Introspect<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Introspect<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}
