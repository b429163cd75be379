//! Bar charts as inline SVG, drawn on the server from counts (no script, no style attribute:
//! colours come from the console's stylesheet by class). Each chart carries its numbers as
//! text too, so it reads without the picture and to a screen reader.

use rapha_core::demographics::{shown_count, SMALL_CELL};

use super::html::Html;

const WIDTH: u64 = 480;
const LABEL: u64 = 160;
const BAR: u64 = 22;

/// A horizontal bar chart of `items` (label, count) titled `title`.
pub fn bars(title: &'static str, items: &[(String, u64)]) -> Html {
    draw(title, items, 0)
}

/// [`bars`] of counts of patients: a count below [`SMALL_CELL`] is shown as "<5" with no bar
/// (and is left out of the scale), so neither the text nor the picture gives it.
pub fn patient_bars(title: &'static str, items: &[(String, u64)]) -> Html {
    draw(title, items, SMALL_CELL)
}

/// The chart, with counts below `small` shown as "<small" and no bar.
fn draw(title: &'static str, items: &[(String, u64)], small: u64) -> Html {
    let shown = |n: u64| {
        if n < small {
            shown_count(n)
        } else {
            n.to_string()
        }
    };
    let mut h = Html::new();
    h.raw("<figure class=\"chart\"><figcaption>")
        .raw(title)
        .raw("</figcaption>\n");
    if items.is_empty() {
        h.raw("<p class=\"muted\">none</p></figure>\n");
        return h;
    }
    let max = items
        .iter()
        .map(|(_, n)| *n)
        .filter(|n| *n >= small)
        .max()
        .unwrap_or(0)
        .max(1);
    let height = BAR
        * u64::try_from(items.len())
            .unwrap_or(u64::MAX / BAR)
            .min(1000)
        + 4;
    h.raw("<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"")
        .text(WIDTH)
        .raw("\" height=\"")
        .text(height)
        .raw("\" viewBox=\"0 0 ")
        .text(WIDTH)
        .raw(" ")
        .text(height)
        .raw("\" aria-label=\"")
        .raw(title)
        .raw("\">\n");
    let span = WIDTH - LABEL - 60;
    for (i, (label, count)) in items.iter().enumerate() {
        let y = BAR * u64::try_from(i).unwrap_or(0) + 2;
        let n = if *count < small { 0 } else { *count };
        let w = (n.saturating_mul(span) / max).max(u64::from(n > 0));
        h.raw("<text class=\"label\" x=\"0\" y=\"")
            .text(y + 15)
            .raw("\">")
            .text(label)
            .raw("</text><rect class=\"bar\" x=\"")
            .text(LABEL)
            .raw("\" y=\"")
            .text(y + 2)
            .raw("\" width=\"")
            .text(w)
            .raw("\" height=\"")
            .text(BAR - 6)
            .raw("\"/><text class=\"count\" x=\"")
            .text(LABEL + w + 6)
            .raw("\" y=\"")
            .text(y + 15)
            .raw("\">")
            .text(shown(*count))
            .raw("</text>\n");
    }
    h.raw("</svg>\n<table class=\"figures\"><tbody>\n");
    for (label, n) in items {
        h.raw("<tr><th scope=\"row\">")
            .text(label)
            .raw("</th><td>")
            .text(shown(*n))
            .raw("</td></tr>\n");
    }
    h.raw("</tbody></table></figure>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_count_and_escape_labels() {
        let h = bars(
            "Instances by modality",
            &[("CT".into(), 300), ("<MR>".into(), 100)],
        );
        let s = h.as_str();
        assert!(s.contains("width=\"260\""), "{s}");
        assert!(s.contains("width=\"86\""), "{s}");
        assert!(s.contains("&lt;MR&gt;") && !s.contains("<MR>"), "{s}");
        assert!(!s.contains("style="), "{s}");
        assert!(bars("x", &[]).as_str().contains("none"));
    }

    #[test]
    fn patient_bars_show_counts_below_five_as_small_with_no_bar() {
        let h = patient_bars(
            "Patients by sex",
            &[
                ("female (F)".into(), 4),
                ("male (M)".into(), 30),
                ("other (O)".into(), 0),
            ],
        );
        let s = h.as_str();
        // The largest shown count spans the chart; the small ones draw nothing.
        assert!(s.contains("width=\"260\""), "{s}");
        assert_eq!(s.matches("width=\"0\"").count(), 2, "{s}");
        assert_eq!(s.matches("&lt;5").count(), 4, "{s}");
        assert!(
            s.contains(">30<") && !s.contains(">4<") && !s.contains(">0<"),
            "{s}"
        );
        // Only a small count draws no bar in `bars`.
        assert!(bars("x", &[("a".into(), 4)]).as_str().contains(">4<"));
    }
}
