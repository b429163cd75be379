//! HTML escaped by construction: a page is built from `&'static str` markup, which only the
//! console's own source can supply, and [`Html::text`] for every value, which escapes it.
//! No method takes a runtime string as markup, so a publisher's name, a reason or a trainer's
//! detail can never become a tag or an attribute.

use std::fmt::{Display, Write as _};

/// A page or a fragment of one.
#[derive(Debug, Default)]
pub struct Html(String);

impl Html {
    pub fn new() -> Self {
        Self(String::with_capacity(16 * 1024))
    }

    /// Markup written in the console's source.
    pub fn raw(&mut self, markup: &'static str) -> &mut Self {
        self.0.push_str(markup);
        self
    }

    /// A value, escaped for element text and double-quoted attribute values alike.
    pub fn text(&mut self, value: impl Display) -> &mut Self {
        let start = self.0.len();
        let _ = write!(self.0, "{value}");
        let written = self.0.split_off(start);
        escape_into(&mut self.0, &written);
        self
    }

    /// `<tag>value</tag>` for a static tag pair.
    pub fn el(
        &mut self,
        open: &'static str,
        value: impl Display,
        close: &'static str,
    ) -> &mut Self {
        self.raw(open).text(value).raw(close)
    }

    /// A table row of a label and a value.
    pub fn row(&mut self, label: &'static str, value: impl Display) -> &mut Self {
        self.raw("<tr><th scope=\"row\">")
            .raw(label)
            .raw("</th><td>")
            .text(value)
            .raw("</td></tr>\n")
    }

    /// Appends a fragment built the same way.
    pub fn push(&mut self, fragment: Self) -> &mut Self {
        self.0.push_str(&fragment.0);
        self
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_escaped_and_only_static_markup_is_written_as_is() {
        let mut h = Html::new();
        h.raw("<p title=\"")
            .text("\"><script>alert(1)</script>")
            .raw("\">")
            .text("a & b's <i>")
            .raw("</p>");
        assert_eq!(
            h.as_str(),
            "<p title=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\">a &amp; b&#39;s \
             &lt;i&gt;</p>"
        );
    }
}
