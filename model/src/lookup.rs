//! The one way a user's word finds a record, as Docker does it: the full ID, else the name, else a
//! unique ID prefix. Callers turn the outcome into their own messages.

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    /// Exactly one record.
    Found(&'a T),
    /// Nothing matches.
    Missing,
    /// Several records have that name.
    AmbiguousName(Vec<&'a T>),
    /// Several IDs start with it.
    AmbiguousPrefix(Vec<&'a T>),
}

/// Finds `query` among `items` by full ID, then by name (when `name` is given), then by unique ID
/// prefix. An empty query matches nothing.
pub fn find<'a, T, I>(
    items: I,
    id: impl Fn(&T) -> &str,
    name: Option<&dyn Fn(&T) -> &str>,
    query: &str,
) -> Lookup<'a, T>
where
    I: Iterator<Item = &'a T> + Clone,
{
    if query.is_empty() {
        return Lookup::Missing;
    }
    if let Some(t) = items.clone().find(|t| id(t) == query) {
        return Lookup::Found(t);
    }
    if let Some(name) = name {
        let named: Vec<&T> = items.clone().filter(|t| name(t) == query).collect();
        match named.len() {
            0 => {}
            1 => return Lookup::Found(named[0]),
            _ => return Lookup::AmbiguousName(named),
        }
    }
    let prefixed: Vec<&T> = items.filter(|t| id(t).starts_with(query)).collect();
    match prefixed.len() {
        0 => Lookup::Missing,
        1 => Lookup::Found(prefixed[0]),
        _ => Lookup::AmbiguousPrefix(prefixed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_then_name_then_unique_prefix() {
        let items = [("abc123", "web"), ("abd456", "api"), ("web999", "db"), ("x1", "dup"), ("x2", "dup")];
        let look = |q: &str| find(items.iter(), |t| t.0, Some(&|t: &(&str, &str)| t.1), q);
        let cases: &[(&str, Lookup<(&str, &str)>)] = &[
            ("abc123", Lookup::Found(&items[0])),
            ("web", Lookup::Found(&items[0])),
            ("web9", Lookup::Found(&items[2])),
            ("abd", Lookup::Found(&items[1])),
            ("ab", Lookup::AmbiguousPrefix(vec![&items[0], &items[1]])),
            ("dup", Lookup::AmbiguousName(vec![&items[3], &items[4]])),
            ("zz", Lookup::Missing),
            ("", Lookup::Missing),
        ];
        for (q, want) in cases {
            assert_eq!(&look(q), want, "query {q:?}");
        }
        let no_names = find(items.iter(), |t| t.0, None, "web");
        assert_eq!(no_names, Lookup::Found(&items[2]), "without names, web is a prefix of web999");
    }
}
