//! Parser benchmarks: throughput of `check` (parse + validate), `parse` and `validate` on a large
//! generated Camunda-Modeler-style executable process, and on a real MIWG reference model when the shared
//! corpus is present. It must never write outside criterion's own `target/criterion` reports, and must
//! stay quick by default (about a minute in all).
//!
//! Run with `cargo bench -p govflow-engine --bench parse`; figures are recorded in `docs/benchmarks.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use govflow_engine::model::Scope;
use govflow_engine::{check, has_errors, parse, validate};

/// Units of the generated process: each is a decision block (11 flow nodes, 12 sequence flows).
const N_BLOCKS: usize = 220;
/// One embedded sub-process (5 flow nodes, 4 sequence flows) after every this many blocks.
const BLOCKS_PER_SUB_PROCESS: usize = 10;
/// The generated file must hold at least this many flow nodes + sequence flows.
const MIN_ELEMENTS: usize = 5_000;
/// The MIWG model benchmarked when the corpus is present, relative to the corpus root.
const MIWG_FILE: &str = "miwg/Reference/C.8.0.bpmn";

fn bench_parser(c: &mut Criterion) {
    let generated = generate(N_BLOCKS);
    let n_elements = assert_checks_clean("generated", generated.as_bytes());
    assert!(n_elements >= MIN_ELEMENTS, "generated process has {n_elements} elements, want ≥ {MIN_ELEMENTS}");
    eprintln!(
        "generated process: {} bytes ({:.2} MiB), {n_elements} flow nodes + sequence flows",
        generated.len(),
        generated.len() as f64 / (1024.0 * 1024.0)
    );
    bench_file(c, "generated", generated.as_bytes());

    let miwg = corpus_root().join(MIWG_FILE);
    if let Ok(bytes) = std::fs::read(&miwg) {
        let n_elements = count_elements(&parse(&bytes).definitions.map(|d| d.processes).unwrap_or_default());
        eprintln!("{}: {} bytes, {n_elements} flow nodes + sequence flows", miwg.display(), bytes.len());
        bench_file(c, "miwg-C.8.0", &bytes);
    }
}

/// `check`, `parse` and `validate` benchmarks of `bytes`, measured in bytes per second.
fn bench_file(c: &mut Criterion, name: &str, bytes: &[u8]) {
    let mut group = c.benchmark_group("check");
    configure(&mut group, bytes);
    group.bench_function(name, |b| b.iter(|| check(std::hint::black_box(bytes))));
    group.finish();

    let mut group = c.benchmark_group("parse");
    configure(&mut group, bytes);
    group.bench_function(name, |b| b.iter(|| parse(std::hint::black_box(bytes))));
    group.finish();

    // Validation alone, still per byte of the file, so that check ≈ parse + validate reads directly.
    let Some(definitions) = parse(bytes).definitions else { return };
    let mut group = c.benchmark_group("validate");
    configure(&mut group, bytes);
    group.bench_function(name, |b| b.iter(|| validate(std::hint::black_box(&definitions))));
    group.finish();
}

/// Short runs by default: the machine is shared, and medians over a few runs beat one long run.
fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, bytes: &[u8]) {
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(bytes.len() as u64));
}

/// Same convention as `tests/corpus.rs`: `GOVFLOW_CORPUS`, else the shared folder next to the repository.
fn corpus_root() -> PathBuf {
    match std::env::var_os("GOVFLOW_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bpmn"),
    }
}

/// Checks `bytes` once and panics on any error diagnostic: a benchmark of a rejected file would measure
/// the wrong thing. Warnings are only reported (the generated file has none when this was written).
/// Returns the number of flow nodes + sequence flows.
fn assert_checks_clean(name: &str, bytes: &[u8]) -> usize {
    let parsed = check(bytes);
    assert!(!has_errors(&parsed.diagnostics), "{name}: {:#?}", parsed.diagnostics);
    if !parsed.diagnostics.is_empty() {
        eprintln!("{name}: {} non-error diagnostics: {:#?}", parsed.diagnostics.len(), parsed.diagnostics);
    }
    let Some(definitions) = parsed.definitions else { panic!("{name}: no model") };
    count_elements(&definitions.processes)
}

fn count_elements(processes: &[govflow_engine::model::Process]) -> usize {
    processes
        .iter()
        .flat_map(|process| process.scope.all_scopes())
        .map(|scope: &Scope| scope.flow_nodes.len() + scope.sequence_flows.len())
        .sum()
}

// -------------------------------------------------------------------------------------------------
// the generated process

/// Element sizes as Camunda Modeler draws them.
const TASK: (i64, i64) = (100, 80);
const GATEWAY: i64 = 50;
const EVENT: i64 = 36;
/// Layout: units run left to right and wrap into rows.
const ROW_WIDTH: i64 = 6_000;
const ROW_HEIGHT: i64 = 480;
const BLOCK_WIDTH: i64 = 700;
const SUB_PROCESS: (i64, i64) = (420, 200);

/// A generated element's id and the points where flows leave and enter its shape.
#[derive(Debug, Clone)]
struct Anchor {
    id: String,
    left: (i64, i64),
    right: (i64, i64),
}

/// A flow node as it will be written; its `incoming`/`outgoing` children come from `Generator::links`.
#[derive(Debug, Default)]
struct NodeXml {
    element: &'static str,
    id: String,
    /// Attributes after `id`, each with its leading space.
    attrs: String,
    /// Children before `incoming` (documentation, extension elements), one level deep.
    head: String,
    /// Children after `outgoing` (event definitions).
    tail: String,
    /// The flow elements of a sub-process.
    children: Vec<Item>,
}

#[derive(Debug)]
enum Item {
    Node(NodeXml),
    Flow(String),
}

/// Builds the semantic model and the BPMNDI plane side by side, as Camunda Modeler orders them.
#[derive(Debug, Default)]
struct Generator {
    /// The elements of the scope being written (the process, or a sub-process while it is built).
    items: Vec<Item>,
    /// Flow node id → ids of its incoming and outgoing sequence flows.
    links: HashMap<String, (Vec<String>, Vec<String>)>,
    diagram: String,
    n_ids: u32,
    /// Left edge of the next unit, and the row it goes in.
    x: i64,
    row: i64,
}

/// A large executable process in the shape of a government service journey: `n_blocks` decision blocks
/// (exclusive split on `=amount > 100`-style FEEL with a default flow to a user task, exclusive merge,
/// parallel split into two service tasks, one guarded by a timer boundary event leading to a reminder
/// and an end event, parallel join), an embedded sub-process after every tenth block, and a full
/// diagram with a shape per node and an edge per flow.
fn generate(n_blocks: usize) -> String {
    let mut generator = Generator { x: 160, ..Generator::default() };
    let start = generator.event("StartEvent", "startEvent", "Application received", (generator.x, 0));
    generator.x += EVENT + 50;
    let mut previous = start;
    for block in 0..n_blocks {
        previous = generator.decision_block(block, &previous);
        if (block + 1) % BLOCKS_PER_SUB_PROCESS == 0 {
            previous = generator.sub_process(block / BLOCKS_PER_SUB_PROCESS, &previous);
        }
    }
    generator.wrap_if_needed(EVENT + 50);
    let end = generator.event("Event", "endEvent", "Application decided", (generator.x, 0));
    generator.connect(&previous, &end, None);
    generator.finish()
}

impl Generator {
    /// A Camunda-style id: prefix, `_`, seven base-36 characters. Unique, because `n ↦ n·odd mod 2³²`
    /// is a bijection and 36⁷ > 2³².
    fn id(&mut self, prefix: &str) -> String {
        self.n_ids += 1;
        let mut value = u64::from(self.n_ids.wrapping_mul(0x9E37_79B1));
        let mut digits = [b'0'; 7];
        for digit in digits.iter_mut().rev() {
            *digit = b"0123456789abcdefghijklmnopqrstuvwxyz"[(value % 36) as usize];
            value /= 36;
        }
        format!("{prefix}_{}", String::from_utf8_lossy(&digits))
    }

    /// Starts a new row when a unit of `width` would not fit in this one.
    fn wrap_if_needed(&mut self, width: i64) {
        if self.x + width > ROW_WIDTH {
            self.row += 1;
            self.x = 160;
        }
    }

    /// The y of a point `dy` below the current row's centre line.
    fn y(&self, dy: i64) -> i64 {
        200 + self.row * ROW_HEIGHT + dy
    }

    fn node(&mut self, node: NodeXml) {
        self.items.push(Item::Node(node));
    }

    fn shape(&mut self, id: &str, (x, y, width, height): (i64, i64, i64, i64), extra: &str, label: bool) {
        self.diagram.push_str(&format!(
            "      <bpmndi:BPMNShape id=\"{id}_di\" bpmnElement=\"{id}\"{extra}>\n        \
             <dc:Bounds x=\"{x}\" y=\"{y}\" width=\"{width}\" height=\"{height}\" />\n"
        ));
        if label {
            self.diagram.push_str(&format!(
                "        <bpmndi:BPMNLabel>\n          <dc:Bounds x=\"{}\" y=\"{}\" width=\"80\" height=\"27\" />\n        \
                 </bpmndi:BPMNLabel>\n",
                x + width / 2 - 40,
                y + height + 7
            ));
        }
        self.diagram.push_str("      </bpmndi:BPMNShape>\n");
    }

    /// A start or end event with its left edge at `x`, centred `dy` below the row line.
    fn event(&mut self, prefix: &str, element: &'static str, name: &str, (x, dy): (i64, i64)) -> Anchor {
        let id = self.id(prefix);
        let attrs = if name.is_empty() { String::new() } else { format!(" name=\"{name}\"") };
        self.node(NodeXml { element, id: id.clone(), attrs, ..NodeXml::default() });
        let y = self.y(dy);
        self.shape(&id, (x, y - EVENT / 2, EVENT, EVENT), "", !name.is_empty());
        Anchor { id, left: (x, y), right: (x + EVENT, y) }
    }

    fn gateway(&mut self, element: &'static str, name: &str, x: i64, default: Option<&str>) -> Anchor {
        let id = self.id("Gateway");
        let mut attrs = if name.is_empty() { String::new() } else { format!(" name=\"{name}\"") };
        if let Some(flow) = default {
            attrs.push_str(&format!(" default=\"{flow}\""));
        }
        self.node(NodeXml { element, id: id.clone(), attrs, ..NodeXml::default() });
        let y = self.y(0);
        let marker = if element == "exclusiveGateway" { " isMarkerVisible=\"true\"" } else { "" };
        self.shape(&id, (x, y - GATEWAY / 2, GATEWAY, GATEWAY), marker, !name.is_empty());
        Anchor { id, left: (x, y), right: (x + GATEWAY, y) }
    }

    /// A task with its extension elements, its left edge at `x`, centred `dy` below the row line.
    fn task(&mut self, element: &'static str, name: &str, (x, dy): (i64, i64), extensions: &str) -> Anchor {
        let id = self.id("Activity");
        let mut attrs = format!(" name=\"{name}\"");
        if extensions.contains("http-json") {
            attrs.push_str(
                " zeebe:modelerTemplate=\"io.camunda.connectors.HttpJson.v2\" zeebe:modelerTemplateVersion=\"8\"",
            );
        }
        let head = format!(
            "<bpmn:documentation>{name}: one step of the generated benchmark journey.</bpmn:documentation>\n\
             <bpmn:extensionElements>\n{extensions}</bpmn:extensionElements>\n"
        );
        self.node(NodeXml { element, id: id.clone(), attrs, head, ..NodeXml::default() });
        let y = self.y(dy);
        self.shape(&id, (x, y - TASK.1 / 2, TASK.0, TASK.1), "", false);
        Anchor { id, left: (x, y), right: (x + TASK.0, y) }
    }

    /// A service task in one of three connector styles (HTTP, payments, messaging).
    fn service_task(&mut self, n: usize, name: &str, at: (i64, i64)) -> Anchor {
        let extensions = match n % 3 {
            0 => format!(
                "  <zeebe:taskDefinition type=\"io.camunda:http-json:1\" retries=\"3\" />\n  <zeebe:ioMapping>\n    \
                 <zeebe:input source=\"GET\" target=\"method\" />\n    <zeebe:input \
                 source=\"=&#34;https://registry.example.gov/api/v1/persons/&#34; + applicant.nationalId\" \
                 target=\"url\" />\n    <zeebe:input source=\"=secrets.REGISTRY_TOKEN\" \
                 target=\"authentication.token\" />\n    <zeebe:output source=\"=response.body.status\" \
                 target=\"registryStatus{n}\" />\n  </zeebe:ioMapping>\n  <zeebe:taskHeaders>\n    <zeebe:header \
                 key=\"resultExpression\" value=\"={{person{n}: response.body}}\" />\n    <zeebe:header \
                 key=\"retryBackoff\" value=\"PT10S\" />\n  </zeebe:taskHeaders>\n"
            ),
            1 => format!(
                "  <zeebe:taskDefinition type=\"govstack.payments.initiate\" retries=\"5\" />\n  \
                 <zeebe:ioMapping>\n    <zeebe:input source=\"=amount\" target=\"payment.amount\" />\n    \
                 <zeebe:input source=\"=applicant.account\" target=\"payment.payee\" />\n    <zeebe:input \
                 source=\"=if amount &gt; 1000 then &#34;manual&#34; else &#34;auto&#34;\" target=\"payment.mode\" \
                 />\n    <zeebe:output source=\"=paymentId\" target=\"payments.step{n}\" />\n  \
                 </zeebe:ioMapping>\n  <zeebe:taskHeaders>\n    <zeebe:header key=\"currency\" value=\"KES\" />\n  \
                 </zeebe:taskHeaders>\n"
            ),
            _ => format!(
                "  <zeebe:taskDefinition type=\"govstack.messaging.send\" />\n  <zeebe:ioMapping>\n    \
                 <zeebe:input source=\"=applicant.phone\" target=\"recipient\" />\n    <zeebe:input \
                 source=\"=&#34;Your application &#34; + string(applicationId) + &#34; reached step {n}&#34;\" \
                 target=\"text\" />\n  </zeebe:ioMapping>\n  <zeebe:taskHeaders>\n    <zeebe:header \
                 key=\"channel\" value=\"sms\" />\n  </zeebe:taskHeaders>\n"
            ),
        };
        self.task("serviceTask", name, at, &extensions)
    }

    /// A Camunda user task with a form, an assignment and a due date.
    fn user_task(&mut self, n: usize, at: (i64, i64)) -> Anchor {
        let extensions = format!(
            "  <zeebe:userTask />\n  <zeebe:formDefinition formId=\"review-application\" />\n  \
             <zeebe:assignmentDefinition assignee=\"=caseOfficer\" candidateGroups=\"registry-officers, \
             supervisors\" />\n  <zeebe:taskSchedule dueDate=\"=now() + duration(&#34;P{}D&#34;)\" />\n  \
             <zeebe:ioMapping>\n    <zeebe:output source=\"=approved\" target=\"decisions.step{n}\" />\n  \
             </zeebe:ioMapping>\n",
            n % 5 + 1
        );
        self.task("userTask", "Review application", at, &extensions)
    }

    /// A sequence flow with the given id; records it on both ends.
    fn flow(&mut self, id: &str, from: &Anchor, to: &Anchor, condition: Option<&str>) {
        let (source, target) = (&from.id, &to.id);
        let xml = match condition {
            None => {
                format!("<bpmn:sequenceFlow id=\"{id}\" sourceRef=\"{source}\" targetRef=\"{target}\" />\n")
            }
            Some(condition) => format!(
                "<bpmn:sequenceFlow id=\"{id}\" name=\"over 100\" sourceRef=\"{source}\" \
                 targetRef=\"{target}\">\n  <bpmn:conditionExpression \
                 xsi:type=\"bpmn:tFormalExpression\">{condition}</bpmn:conditionExpression>\n\
                 </bpmn:sequenceFlow>\n"
            ),
        };
        self.items.push(Item::Flow(xml));
        self.links.entry(source.clone()).or_default().1.push(id.to_owned());
        self.links.entry(target.clone()).or_default().0.push(id.to_owned());
    }

    fn edge(&mut self, id: &str, waypoints: &[(i64, i64)]) {
        self.diagram.push_str(&format!("      <bpmndi:BPMNEdge id=\"{id}_di\" bpmnElement=\"{id}\">\n"));
        for (x, y) in waypoints {
            self.diagram.push_str(&format!("        <di:waypoint x=\"{x}\" y=\"{y}\" />\n"));
        }
        self.diagram.push_str("      </bpmndi:BPMNEdge>\n");
    }

    /// A flow from the right of `from` to the left of `to`: straight on one row, bent through the gap
    /// between rows when the process wraps.
    fn connect(&mut self, from: &Anchor, to: &Anchor, condition: Option<&str>) {
        let id = self.id("Flow");
        self.flow(&id, from, to, condition);
        let ((x1, y1), (x2, y2)) = (from.right, to.left);
        if y1 == y2 {
            self.edge(&id, &[(x1, y1), (x2, y2)]);
        } else {
            let gap = y2 - ROW_HEIGHT / 2;
            self.edge(
                &id,
                &[(x1, y1), (x1 + 20, y1), (x1 + 20, gap), (x2 - 20, gap), (x2 - 20, y2), (x2, y2)],
            );
        }
    }

    /// A flow whose edge is drawn through the given waypoints.
    fn connect_via(&mut self, from: &Anchor, to: &Anchor, waypoints: &[(i64, i64)]) {
        let id = self.id("Flow");
        self.flow(&id, from, to, None);
        self.edge(&id, waypoints);
    }

    /// One decision block, connected from `previous`; returns its exit, the parallel join.
    fn decision_block(&mut self, n: usize, previous: &Anchor) -> Anchor {
        self.wrap_if_needed(BLOCK_WIDTH);
        let x = self.x;
        let (line, below, above) = (self.y(0), self.y(120), self.y(-150));
        // The split names its default flow, so that flow's id exists before the flow is written.
        let default_flow = self.id("Flow");
        let split = self.gateway("exclusiveGateway", "Amount over 100?", x, Some(&default_flow));
        self.connect(previous, &split, None);

        let verify = self.service_task(n, "Verify with registry", (x + 100, 0));
        let review = self.user_task(n, (x + 100, 120));
        let condition = match n % 4 {
            0 => "=amount &gt; 100",
            1 => "=amount &gt; 100 and applicant.age &gt;= 18",
            2 => "=amount &gt; 100 or list contains(flags, &#34;priority&#34;)",
            _ => "=sum(items.price) &gt; 100",
        };
        self.connect(&split, &verify, Some(condition));
        self.flow(&default_flow, &split, &review, None);
        self.edge(&default_flow, &[(x + 25, line + 25), (x + 25, below), (x + 100, below)]);

        let merge = self.gateway("exclusiveGateway", "", x + 250, None);
        self.connect(&verify, &merge, None);
        self.connect_via(&review, &merge, &[(x + 200, below), (x + 275, below), (x + 275, line + 25)]);

        let fork = self.gateway("parallelGateway", "", x + 350, None);
        self.connect(&merge, &fork, None);
        let pay = self.service_task(n + 1, "Collect fee", (x + 450, 0));
        let notify = self.service_task(n + 2, "Notify applicant", (x + 450, 120));
        self.connect(&fork, &pay, None);
        self.connect_via(&fork, &notify, &[(x + 375, line + 25), (x + 375, below), (x + 450, below)]);

        // A timer on the fee collection: a reminder, interrupting or not, that ends its own path.
        let timer_id = self.id("Event");
        let duration = ["PT4H", "P3D", "PT30M", "P1DT12H"][n % 4];
        let cancel = if n % 2 == 0 { "" } else { " cancelActivity=\"false\"" };
        let definition_id = self.id("TimerEventDefinition");
        self.node(NodeXml {
            element: "boundaryEvent",
            id: timer_id.clone(),
            attrs: format!(" name=\"{duration}\"{cancel} attachedToRef=\"{}\"", pay.id),
            tail: format!(
                "<bpmn:timerEventDefinition id=\"{definition_id}\">\n  <bpmn:timeDuration \
                 xsi:type=\"bpmn:tFormalExpression\">{duration}</bpmn:timeDuration>\n\
                 </bpmn:timerEventDefinition>\n"
            ),
            ..NodeXml::default()
        });
        let timer_y = line - TASK.1 / 2;
        self.shape(&timer_id, (x + 482, timer_y - EVENT / 2, EVENT, EVENT), "", true);
        let timer = Anchor { id: timer_id, left: (x + 500, timer_y), right: (x + 500, timer_y) };
        let remind = self.service_task(n + 2, "Send reminder", (x + 450, -150));
        self.connect_via(&timer, &remind, &[(x + 500, timer_y - EVENT / 2), (x + 500, above + TASK.1 / 2)]);
        let reminded = self.event("Event", "endEvent", "Reminder sent", (x + 600, -150));
        self.connect(&remind, &reminded, None);

        let join = self.gateway("parallelGateway", "", x + 600, None);
        self.connect(&pay, &join, None);
        self.connect_via(&notify, &join, &[(x + 550, below), (x + 625, below), (x + 625, line + 25)]);
        self.x += BLOCK_WIDTH;
        join
    }

    /// An expanded embedded sub-process (start, two service tasks, end), connected from `previous`.
    fn sub_process(&mut self, n: usize, previous: &Anchor) -> Anchor {
        self.wrap_if_needed(SUB_PROCESS.0 + 50);
        let x = self.x;
        let line = self.y(0);
        let id = self.id("Activity");
        let anchor = Anchor { id: id.clone(), left: (x, line), right: (x + SUB_PROCESS.0, line) };
        self.connect(previous, &anchor, None);
        let (width, height) = SUB_PROCESS;
        self.shape(&id, (x, line - height / 2, width, height), " isExpanded=\"true\"", false);

        // Inner elements go inside the sub-process element, and into the same diagram plane.
        let outer = std::mem::take(&mut self.items);
        let start = self.event("Event", "startEvent", "", (x + 30, 0));
        let store = self.service_task(n, "Store documents", (x + 100, 0));
        let index = self.service_task(n + 1, "Index case", (x + 240, 0));
        let end = self.event("Event", "endEvent", "", (x + 370, 0));
        self.connect(&start, &store, None);
        self.connect(&store, &index, None);
        self.connect(&index, &end, None);
        let children = std::mem::replace(&mut self.items, outer);
        self.node(NodeXml {
            element: "subProcess",
            id,
            attrs: format!(" name=\"Archive case {n}\""),
            children,
            ..NodeXml::default()
        });
        self.x += width + 50;
        anchor
    }

    fn finish(self) -> String {
        let mut process = String::new();
        render(&self.items, &self.links, 2, &mut process);
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<bpmn:definitions \
             xmlns:bpmn=\"http://www.omg.org/spec/BPMN/20100524/MODEL\" \
             xmlns:bpmndi=\"http://www.omg.org/spec/BPMN/20100524/DI\" \
             xmlns:dc=\"http://www.omg.org/spec/DD/20100524/DC\" xmlns:di=\"http://www.omg.org/spec/DD/20100524/DI\" \
             xmlns:zeebe=\"http://camunda.org/schema/zeebe/1.0\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
             xmlns:modeler=\"http://camunda.org/schema/modeler/1.0\" id=\"Definitions_0bench1\" \
             targetNamespace=\"http://bpmn.io/schema/bpmn\" exporter=\"Camunda Modeler\" exporterVersion=\"5.31.0\" \
             modeler:executionPlatform=\"Camunda Cloud\" modeler:executionPlatformVersion=\"8.6.0\">\n  \
             <bpmn:process id=\"benefit-application\" name=\"Benefit application (benchmark)\" \
             isExecutable=\"true\">\n    <bpmn:extensionElements>\n      <zeebe:versionTag value=\"1.0.0\" />\n    \
             </bpmn:extensionElements>\n{process}  </bpmn:process>\n  <bpmndi:BPMNDiagram id=\"BPMNDiagram_1\">\n    \
             <bpmndi:BPMNPlane id=\"BPMNPlane_1\" bpmnElement=\"benefit-application\">\n{}    </bpmndi:BPMNPlane>\n  \
             </bpmndi:BPMNDiagram>\n</bpmn:definitions>\n",
            self.diagram
        )
    }
}

/// Writes `items` at nesting `depth` (two spaces a level), each node with its incoming and outgoing flows.
fn render(
    items: &[Item],
    links: &HashMap<String, (Vec<String>, Vec<String>)>,
    depth: usize,
    out: &mut String,
) {
    let pad = "  ".repeat(depth);
    let inner = "  ".repeat(depth + 1);
    for item in items {
        match item {
            Item::Flow(xml) => indent(xml, &pad, out),
            Item::Node(node) => {
                out.push_str(&format!("{pad}<bpmn:{} id=\"{}\"{}>\n", node.element, node.id, node.attrs));
                indent(&node.head, &inner, out);
                if let Some((incoming, outgoing)) = links.get(&node.id) {
                    for flow in incoming {
                        out.push_str(&format!("{inner}<bpmn:incoming>{flow}</bpmn:incoming>\n"));
                    }
                    for flow in outgoing {
                        out.push_str(&format!("{inner}<bpmn:outgoing>{flow}</bpmn:outgoing>\n"));
                    }
                }
                indent(&node.tail, &inner, out);
                render(&node.children, links, depth + 1, out);
                out.push_str(&format!("{pad}</bpmn:{}>\n", node.element));
            }
        }
    }
}

fn indent(text: &str, pad: &str, out: &mut String) {
    for line in text.lines() {
        out.push_str(pad);
        out.push_str(line);
        out.push('\n');
    }
}

criterion_group!(benches, bench_parser);
criterion_main!(benches);
