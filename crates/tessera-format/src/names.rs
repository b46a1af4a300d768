//! Settings named by a word: the token types and screenings here, and the
//! engine's index, text, durability and fusion settings. [`named!`](crate::named)
//! gives such a fieldless enum one list of its names and, from it, `ALL`,
//! `name`, `from_name`, `FromStr` / `Display`, and serde as the name — so that
//! every interface (manifest, HTTP, gRPC, CLI, Python) spells and refuses
//! them the same way, and a new variant is one line.

/// A name that is none of a setting's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// What the setting is (`storage`, `index`, …).
    pub what: &'static str,
    pub name: String,
    /// The names it takes, `a, b or c`.
    pub expected: String,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown {} {:?}: use {}", self.what, self.name, self.expected)
    }
}

impl std::error::Error for UnknownName {}

/// `a, b or c`.
pub fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// What [`named!`](crate::named) gives a setting, for code generic over
/// settings (a command-line parser listing the names, say).
pub trait Named: Copy + Send + Sync + 'static {
    /// What the setting is (`storage`, `index`, …).
    const WHAT: &'static str;
    /// Every value, in the order of the names.
    fn all() -> &'static [Self];
    fn name(self) -> &'static str;
}

#[doc(hidden)]
pub use serde as __serde;

/// Implements, for a fieldless enum and its names: `ALL`, `name`,
/// `from_name`, `names` (`a, b or c`), `FromStr` (error
/// [`UnknownName`](crate::names::UnknownName)), `Display`, and serde
/// `Serialize` / `Deserialize` as the name.
///
/// `named!(Durability, "durability", [Durability::Sync => "sync", Durability::Buffered => "buffered"]);`
#[macro_export]
macro_rules! named {
    ($t:ident, $what:literal, [$($v:path => $name:literal),* $(,)?]) => {
        impl $t {
            pub const ALL: [$t; [$($name),*].len()] = [$($v),*];

            pub fn name(self) -> &'static str {
                match self {
                    $($v => $name,)*
                }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|t| t.name() == name)
            }

            /// Every name, as `a, b or c`.
            pub fn names() -> String {
                $crate::names::one_of(&[$($name),*])
            }
        }

        impl $crate::names::Named for $t {
            const WHAT: &'static str = $what;

            fn all() -> &'static [Self] {
                &Self::ALL
            }

            fn name(self) -> &'static str {
                $t::name(self)
            }
        }

        impl std::str::FromStr for $t {
            type Err = $crate::names::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_name(s).ok_or_else(|| $crate::names::UnknownName {
                    what: $what,
                    name: s.to_string(),
                    expected: Self::names(),
                })
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl $crate::names::__serde::Serialize for $t {
            fn serialize<S: $crate::names::__serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> $crate::names::__serde::Deserialize<'de> for $t {
            fn deserialize<D: $crate::names::__serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str> as $crate::names::__serde::Deserialize>::deserialize(d)?;
                name.parse().map_err(<D::Error as $crate::names::__serde::de::Error>::custom)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Named;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fruit {
        Apple,
        Fig,
        Kiwi,
    }
    crate::named!(Fruit, "fruit", [Fruit::Apple => "apple", Fruit::Fig => "fig", Fruit::Kiwi => "kiwi"]);

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_rest() {
        for f in Fruit::ALL {
            assert_eq!(f.name().parse::<Fruit>(), Ok(f));
            assert_eq!(f.to_string(), f.name());
        }
        let e = "pear".parse::<Fruit>().unwrap_err();
        assert_eq!(e.to_string(), r#"unknown fruit "pear": use apple, fig or kiwi"#);
        assert_eq!((Fruit::WHAT, Fruit::all()), ("fruit", &Fruit::ALL[..]));
        assert_eq!(super::one_of(&["a"]), "a");
        assert_eq!(super::one_of(&["a", "b"]), "a or b");
    }
}
