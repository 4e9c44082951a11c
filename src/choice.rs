//! Closed sets of named values (architectures, schedules, curve kinds, ...).
//!
//! Each is declared once with [`choice!`]: the variant, the name that the
//! command line and every file use, and the help text. The core knows no
//! command-line parser; the CLI builds its parsers from [`Choice::ALL`].

/// A closed set of named values.
pub trait Choice: Copy + PartialEq + Sized + Send + Sync + 'static {
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];
    /// The name used on the command line and in files.
    fn name(self) -> &'static str;
    /// One line of help.
    fn help(self) -> &'static str;
    /// The value called `s`, if any.
    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == s)
    }
    /// Every name, comma-separated (for error messages).
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Declares an enum whose variants have a name (for the command line and
/// for serde) and a help line (the variant's doc comment).
#[macro_export]
macro_rules! choice {
    (
        $(#[$meta:meta])*
        pub enum $T:ident {
            $( $(#[doc = $doc:literal])* $V:ident = $name:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum $T {
            $( $(#[doc = $doc])* #[serde(rename = $name)] $V, )+
        }

        impl $crate::choice::Choice for $T {
            const ALL: &'static [Self] = &[$($T::$V),+];
            fn name(self) -> &'static str {
                match self { $($T::$V => $name),+ }
            }
            fn help(self) -> &'static str {
                match self { $($T::$V => concat!("" $(, $doc)*).trim()),+ }
            }
        }

        impl $T {
            /// The name used on the command line and in files.
            pub fn name(self) -> &'static str {
                <$T as $crate::choice::Choice>::name(self)
            }
            /// Parses a name, with an error that lists the valid ones.
            pub fn parse(s: &str) -> anyhow::Result<$T> {
                use $crate::choice::Choice;
                $T::from_name(s).ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown {} '{s}'; expected one of: {}",
                        stringify!($T),
                        $T::names()
                    )
                })
            }
        }

        impl std::fmt::Display for $T {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Choice;

    crate::choice! {
        /// A test set.
        pub enum Colour {
            /// The sky's.
            Blue = "blue",
            /// Two words,
            /// on two lines.
            DeepRed = "deep-red",
        }
    }

    #[test]
    fn names_help_and_serde_agree() {
        assert_eq!(Colour::ALL, &[Colour::Blue, Colour::DeepRed]);
        assert_eq!(Colour::DeepRed.name(), "deep-red");
        assert_eq!(Colour::DeepRed.help(), "Two words, on two lines.");
        assert_eq!(Colour::from_name("blue"), Some(Colour::Blue));
        assert_eq!(Colour::from_name("Blue"), None);
        assert_eq!(
            serde_json::to_string(&Colour::DeepRed).unwrap(),
            "\"deep-red\""
        );
        let back: Colour = serde_json::from_str("\"blue\"").unwrap();
        assert_eq!(back, Colour::Blue);
        let err = Colour::parse("green").unwrap_err().to_string();
        assert!(err.contains("blue, deep-red"), "{err}");
    }
}
