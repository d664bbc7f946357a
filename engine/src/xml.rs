//! A hardened XML front end: bytes → decoded text → a namespace-resolved element tree with line:column
//! positions. It refuses DTDs and entity declarations (no XXE, no billion laughs), enforces a size and a
//! nesting-depth limit, and reports every problem as a [`Diagnostic`] — it must never panic, whatever
//! the bytes.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::{NsReader, XmlVersion};

use crate::diagnostics::{Code, Diagnostic};
use crate::model::Position;

/// Limits applied before and while reading; the defaults suit BPMN files drawn by people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted document, in bytes (default 10 MiB).
    pub max_bytes: usize,
    /// Deepest accepted element nesting (default 256).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_bytes: 10 * 1024 * 1024, max_depth: 256 }
    }
}

/// One XML element with its namespace resolved to a URI.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Node {
    /// Namespace URI, `None` when the name is in no namespace.
    pub ns: Option<String>,
    pub local: String,
    /// The name as written, with prefix.
    pub qname: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Node>,
    /// Concatenated character data directly inside this element (not of its children).
    pub text: String,
    pub pos: Position,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attr {
    pub ns: Option<String>,
    pub local: String,
    pub qname: String,
    pub value: String,
}

impl Node {
    /// The value of the un-namespaced attribute `local` (BPMN attributes carry no prefix).
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|attr| attr.ns.is_none() && attr.local == local)
            .map(|attr| attr.value.as_str())
    }

    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.local == local
    }
}

/// Decodes `bytes` and reads them into a tree. `None` (with at least one error diagnostic) when the
/// document is unusable.
pub(crate) fn read(bytes: &[u8], limits: Limits, diagnostics: &mut Vec<Diagnostic>) -> Option<Node> {
    if bytes.len() > limits.max_bytes {
        diagnostics.push(Diagnostic::error(
            Code::TooLarge,
            format!(
                "document is {} bytes; the maximum is {} bytes (raise it with the engine's parse limits)",
                bytes.len(),
                limits.max_bytes
            ),
        ));
        return None;
    }
    let text = decode(bytes, diagnostics)?;
    let lines = LineIndex::new(&text);
    let mut tree = TreeReader {
        reader: NsReader::from_str(&text),
        text: &text,
        lines: &lines,
        limits,
        refusals: Vec::new(),
        n_refused_references: 0,
    };
    let result = tree.read_document();
    diagnostics.append(&mut tree.refusals);
    match result {
        Ok(root) => Some(root),
        Err(diagnostic) => {
            diagnostics.push(diagnostic);
            None
        }
    }
}

/// At most this many refused entity references are reported one by one; the rest are counted.
const MAX_REPORTED_REFERENCES: usize = 10;

/// Turns the raw bytes into UTF-8 text: UTF-8 (with or without BOM), UTF-16 by BOM, or any encoding
/// the XML declaration names that `encoding_rs` knows (ISO-8859-1, windows-1252, ...).
fn decode<'a>(bytes: &'a [u8], diagnostics: &mut Vec<Diagnostic>) -> Option<Cow<'a, str>> {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        return decode_with(encoding, &bytes[bom_len..], diagnostics);
    }
    let label = declared_encoding(bytes);
    let encoding = match label {
        None => encoding_rs::UTF_8,
        Some(label) => match encoding_rs::Encoding::for_label(label.as_bytes()) {
            Some(encoding) => encoding,
            None => {
                diagnostics.push(
                    Diagnostic::error(
                        Code::MalformedXml,
                        format!("the XML declaration names encoding '{label}', which govflow cannot read"),
                    )
                    .at(Position { line: 1, column: 1 }),
                );
                return None;
            }
        },
    };
    decode_with(encoding, bytes, diagnostics)
}

fn decode_with<'a>(
    encoding: &'static encoding_rs::Encoding,
    bytes: &'a [u8],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Cow<'a, str>> {
    if encoding == encoding_rs::UTF_8 {
        return match std::str::from_utf8(bytes) {
            Ok(text) => Some(Cow::Borrowed(text)),
            Err(error) => {
                let valid = &bytes[..error.valid_up_to()];
                // The prefix is valid UTF-8 by construction.
                let prefix = String::from_utf8_lossy(valid);
                let lines = LineIndex::new(&prefix);
                diagnostics.push(
                    Diagnostic::error(
                        Code::MalformedXml,
                        format!(
                            "invalid UTF-8 at byte {}; save the file as UTF-8 or declare its encoding",
                            error.valid_up_to()
                        ),
                    )
                    .at(lines.position(&prefix, prefix.len())),
                );
                None
            }
        };
    }
    match encoding.decode_without_bom_handling_and_without_replacement(bytes) {
        Some(text) => Some(Cow::Owned(text.into_owned())),
        None => {
            diagnostics.push(Diagnostic::error(
                Code::MalformedXml,
                format!("the file is not valid {} (its declared encoding)", encoding.name()),
            ));
            None
        }
    }
}

/// The `encoding="..."` of an XML declaration at the very start of the document, if any.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(256)];
    if !head.starts_with(b"<?xml") {
        return None;
    }
    let end = head.windows(2).position(|w| w == b"?>")?;
    let declaration = String::from_utf8_lossy(&head[..end]);
    let at = declaration.find("encoding")?;
    let rest = declaration[at + "encoding".len()..].trim_start().strip_prefix('=')?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = rest[1..].split(quote).next()?;
    Some(value.trim().to_owned())
}

/// Byte offset → 1-based line and character column.
///
/// # Invariants
/// Reading asks for offsets in increasing order, so the column is counted from the previous answer when
/// it is on the same line: linear in the file, even for a file written on one line.
struct LineIndex {
    starts: Vec<usize>,
    /// The last answer: (byte offset, characters from its line's start to it).
    cursor: std::cell::Cell<(usize, usize)>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        LineIndex { starts, cursor: std::cell::Cell::new((0, 0)) }
    }

    fn position(&self, text: &str, offset: usize) -> Position {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|start| *start <= offset).max(1);
        let start = self.starts[line - 1];
        let count = |from: usize| text.get(from..offset).map_or(offset - from, |s| s.chars().count());
        let (cursor_offset, cursor_chars) = self.cursor.get();
        let chars = if cursor_offset >= start && cursor_offset <= offset {
            cursor_chars + count(cursor_offset)
        } else {
            count(start)
        };
        self.cursor.set((offset, chars));
        Position {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(chars + 1).unwrap_or(u32::MAX),
        }
    }
}

struct TreeReader<'a> {
    reader: NsReader<&'a [u8]>,
    text: &'a str,
    lines: &'a LineIndex,
    limits: Limits,
    /// Non-fatal refusals (a DTD, undeclared entity references): reported, skipped, reading goes on so
    /// that the rest of the file is still checked. Nothing refused is ever expanded.
    refusals: Vec<Diagnostic>,
    n_refused_references: usize,
}

impl TreeReader<'_> {
    fn pos(&self, offset: u64) -> Position {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        self.lines.position(self.text, offset)
    }

    fn read_document(&mut self) -> Result<Node, Diagnostic> {
        self.reader.config_mut().check_end_names = true;
        let mut stack: Vec<Node> = Vec::new();
        let mut root: Option<Node> = None;
        loop {
            let start = self.reader.buffer_position();
            let pos = self.pos(start);
            let (resolved, event) = match self.reader.read_resolved_event() {
                Ok((resolved, event)) => (namespace_of(&resolved), event),
                Err(error) => {
                    let at = self.pos(self.reader.error_position());
                    return Err(
                        Diagnostic::error(Code::MalformedXml, format!("malformed XML: {error}")).at(at)
                    );
                }
            };
            match event {
                Event::Start(start_tag) => {
                    let node = self.open(&stack, &root, resolved, &start_tag, pos)?;
                    stack.push(node);
                }
                Event::Empty(start_tag) => {
                    let node = self.open(&stack, &root, resolved, &start_tag, pos)?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                }
                Event::End(_) => {
                    let Some(node) = stack.pop() else {
                        return Err(Diagnostic::error(
                            Code::MalformedXml,
                            "malformed XML: unexpected end tag",
                        )
                        .at(pos));
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                }
                Event::Text(text) => {
                    let content = text.xml10_content();
                    match stack.last_mut() {
                        Some(node) => node.text.push_str(&content),
                        None if content.trim().is_empty() => {}
                        None => {
                            return Err(Diagnostic::error(
                                Code::MalformedXml,
                                "malformed XML: text outside the root element",
                            )
                            .at(pos));
                        }
                    }
                }
                Event::CData(data) => {
                    if let Some(node) = stack.last_mut() {
                        node.text.push_str(&data);
                    }
                }
                Event::GeneralRef(reference) => {
                    let ch = match reference.resolve_char_ref() {
                        Ok(Some(ch)) => ch,
                        Ok(None) => match predefined_entity(&reference) {
                            Some(ch) => ch,
                            None => {
                                self.refuse_reference(&reference, pos);
                                continue;
                            }
                        },
                        Err(error) => {
                            return Err(Diagnostic::error(
                                Code::MalformedXml,
                                format!("malformed character reference: {error}"),
                            )
                            .at(pos));
                        }
                    };
                    if let Some(node) = stack.last_mut() {
                        node.text.push(ch);
                    }
                }
                Event::DocType(_) => {
                    // Refused, not read: no entity it declares is ever expanded.
                    self.refusals.push(
                        Diagnostic::error(
                            Code::DtdRefused,
                            "DOCTYPE declarations are refused: BPMN files need no DTD, and DTDs enable XXE and \
                             entity-expansion attacks; its declarations were ignored",
                        )
                        .at(pos),
                    );
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(open) = stack.last() {
            return Err(Diagnostic::error(
                Code::MalformedXml,
                format!("malformed XML: element <{}> is never closed", open.qname),
            )
            .at(open.pos));
        }
        root.ok_or_else(|| {
            Diagnostic::error(Code::MalformedXml, "the document has no root element")
                .at(Position { line: 1, column: 1 })
        })
    }

    fn refuse_reference(&mut self, name: &str, pos: Position) {
        self.n_refused_references += 1;
        match self.n_refused_references {
            n if n <= MAX_REPORTED_REFERENCES => self.refusals.push(
                Diagnostic::error(
                    Code::DtdRefused,
                    format!(
                        "entity reference '&{name};' is refused and left out: only the five predefined XML \
                         entities and character references are allowed"
                    ),
                )
                .at(pos),
            ),
            n if n == MAX_REPORTED_REFERENCES + 1 => self.refusals.push(
                Diagnostic::error(
                    Code::DtdRefused,
                    "more entity references are refused; only the first ones are listed",
                )
                .at(pos),
            ),
            _ => {}
        }
    }

    /// Checks that a new element may open here and reads its tag.
    fn open(
        &self,
        stack: &[Node],
        root: &Option<Node>,
        ns: Option<String>,
        tag: &BytesStart<'_>,
        pos: Position,
    ) -> Result<Node, Diagnostic> {
        if root.is_some() {
            return Err(Diagnostic::error(
                Code::MalformedXml,
                "malformed XML: content after the root element",
            )
            .at(pos));
        }
        if stack.len() >= self.limits.max_depth {
            return Err(Diagnostic::error(
                Code::TooDeep,
                format!("elements are nested more than {} deep", self.limits.max_depth),
            )
            .at(pos));
        }
        self.element(ns, tag, pos)
    }

    fn element(&self, ns: Option<String>, tag: &BytesStart<'_>, pos: Position) -> Result<Node, Diagnostic> {
        let qname = tag.name().as_ref().to_owned();
        let local = tag.local_name().as_ref().to_owned();
        let mut attrs = Vec::new();
        for attr in tag.attributes() {
            let attr = attr.map_err(|error| {
                Diagnostic::error(Code::MalformedXml, format!("malformed attribute in <{qname}>: {error}"))
                    .at(pos)
            })?;
            let attr_qname = attr.key.as_ref().to_owned();
            if attr_qname == "xmlns" || attr_qname.starts_with("xmlns:") {
                continue;
            }
            let (resolved, attr_local) = self.reader.resolver().resolve_attribute(attr.key);
            let value = attr.normalized_value(XmlVersion::Implicit1_0).map_err(|error| {
                Diagnostic::error(
                    Code::MalformedXml,
                    format!("attribute '{attr_qname}' of <{qname}> cannot be read: {error}"),
                )
                .at(pos)
            })?;
            attrs.push(Attr {
                ns: namespace_of(&resolved),
                local: attr_local.as_ref().to_owned(),
                qname: attr_qname,
                value: value.into_owned(),
            });
        }
        Ok(Node { ns, local, qname, attrs, children: Vec::new(), text: String::new(), pos })
    }
}

fn namespace_of(resolved: &ResolveResult<'_>) -> Option<String> {
    match resolved {
        ResolveResult::Bound(ns) => Some(ns.as_ref().to_owned()),
        // An undeclared prefix: keep the element, in no namespace we know; it will not match BPMN names.
        ResolveResult::Unbound | ResolveResult::Unknown(_) => None,
    }
}

fn predefined_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(text: &str) -> (Option<Node>, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let node = read(text.as_bytes(), Limits::default(), &mut diagnostics);
        (node, diagnostics)
    }

    #[test]
    fn resolves_namespaces_and_positions() {
        let (node, diagnostics) = read_str(
            "<?xml version=\"1.0\"?>\n<d:a xmlns:d=\"urn:d\" x=\"1 &amp; 2\">\n  <b xmlns=\"urn:b\">t&#65;</b>\n</d:a>",
        );
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let root = node.unwrap();
        assert!(root.is("urn:d", "a"));
        assert_eq!(root.attr("x"), Some("1 & 2"));
        assert_eq!(root.pos, Position { line: 2, column: 1 });
        let child = &root.children[0];
        assert!(child.is("urn:b", "b"));
        assert_eq!(child.text, "tA");
        assert_eq!(child.pos, Position { line: 3, column: 3 });
    }

    #[test]
    fn columns_are_counted_incrementally_and_stay_right() {
        let text = "ab\u{e9}<x/>\n<y/>  <z/>";
        let lines = LineIndex::new(text);
        assert_eq!(lines.position(text, 4), Position { line: 1, column: 4 });
        assert_eq!(lines.position(text, 9), Position { line: 2, column: 1 });
        assert_eq!(lines.position(text, 15), Position { line: 2, column: 7 });
        // Out of order still answers right (from the line start).
        assert_eq!(lines.position(text, 2), Position { line: 1, column: 3 });
    }

    #[test]
    fn refuses_doctype_and_unknown_entities_without_expanding_them() {
        let (node, diagnostics) =
            read_str("<?xml version=\"1.0\"?>\n<!DOCTYPE a [<!ENTITY x \"y\">]>\n<a>1&x;2</a>");
        // The document is still read (so its other problems are reported), the entity never expanded.
        assert_eq!(node.unwrap().text, "12");
        assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
        assert!(diagnostics.iter().all(|d| d.code == Code::DtdRefused && d.is_error()));
        assert_eq!(diagnostics[0].pos.line, 2);
        let laughs = format!("<a>{}</a>", "&lol;".repeat(1000));
        let (_, diagnostics) = read_str(&laughs);
        assert_eq!(diagnostics.len(), MAX_REPORTED_REFERENCES + 1);
    }

    #[test]
    fn limits_size_and_depth() {
        let mut diagnostics = Vec::new();
        let deep = format!("{}{}", "<a>".repeat(20), "</a>".repeat(20));
        let node = read(deep.as_bytes(), Limits { max_bytes: 1000, max_depth: 10 }, &mut diagnostics);
        assert!(node.is_none());
        assert_eq!(diagnostics[0].code, Code::TooDeep);
        diagnostics.clear();
        let node = read(deep.as_bytes(), Limits { max_bytes: 10, max_depth: 100 }, &mut diagnostics);
        assert!(node.is_none());
        assert_eq!(diagnostics[0].code, Code::TooLarge);
    }

    #[test]
    fn reports_malformed_xml_with_position() {
        let (node, diagnostics) = read_str("<a>\n  <b></c>\n</a>");
        assert!(node.is_none());
        assert_eq!(diagnostics[0].code, Code::MalformedXml);
        assert_eq!(diagnostics[0].pos.line, 2);
        let (_, diagnostics) = read_str("<a>");
        assert_eq!(diagnostics[0].code, Code::MalformedXml);
        let (_, diagnostics) = read_str("");
        assert_eq!(diagnostics[0].code, Code::MalformedXml);
    }

    #[test]
    fn decodes_bom_and_declared_encodings() {
        let mut diagnostics = Vec::new();
        let mut bytes = vec![0xEF, 0xBB, 0xBF];
        bytes.extend_from_slice(b"<a>x</a>");
        assert_eq!(read(&bytes, Limits::default(), &mut diagnostics).unwrap().text, "x");
        let latin1 = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>caf\xe9</a>";
        assert_eq!(read(latin1, Limits::default(), &mut diagnostics).unwrap().text, "caf\u{e9}");
        assert!(diagnostics.is_empty());
        let bad = b"<a>\n caf\xe9</a>";
        assert!(read(bad, Limits::default(), &mut diagnostics).is_none());
        assert_eq!(diagnostics[0].code, Code::MalformedXml);
        assert_eq!(diagnostics[0].pos, Position { line: 2, column: 5 });
    }
}
