//! "Did you mean ...?": the closest known name to a misspelt one.

/// The candidate closest to `word`, if one is close enough to be the intended name.
///
/// Close enough means an edit distance of at most a third of the word's length (at least 1), so
/// `polres-marros` finds `polres-maros` but `dinsos` does not find `polres`.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    let lowered = word.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            (
                edit_distance(&lowered, &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// ` (did you mean "x"?)`, or nothing.
pub(crate) fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|found| format!(" (did you mean \"{found}\"?)"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_typo_but_not_a_different_word() {
        let agencies = ["polres-maros", "maros-dinsos", "maros-dp3a"];
        assert_eq!(
            did_you_mean("polres-marros", agencies),
            Some("polres-maros")
        );
        assert_eq!(
            did_you_mean("maros-dinsoss", agencies),
            Some("maros-dinsos")
        );
        assert_eq!(did_you_mean("bappeda", agencies), None);
        assert_eq!(
            did_you_mean("Asia/Makasar", ["Asia/Makassar", "Asia/Jakarta"]),
            Some("Asia/Makassar")
        );
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
