//! Graph checks on one scope's sequence flow, with petgraph: reachability from the start events, and
//! structural soundness warnings that no peer engine gives at deploy time — a parallel join fed by an
//! exclusive split (deadlock), an exclusive join fed by a parallel split (lack of synchronisation), and
//! cycles with no way out. Heuristics: they warn, never block a deployment.
//!
//! # Graph
//! Nodes are the scope's flow nodes. Edges are its sequence flows, plus activity → attached boundary
//! event and link throw → link catch of the same name (both move a token without a sequence flow).

use std::collections::HashMap;

use petgraph::algo::{dominators, tarjan_scc};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeRef};
use petgraph::Direction;

use crate::diagnostics::{Code, Diagnostic};
use crate::model::{
    Activity, ActivityKind, EventDefinitionKind, EventPosition, FlowNode, FlowNodeKind, Gateway, GatewayKind,
    Scope, SubProcess, SubProcessKind, TaskKind,
};

pub(super) struct ScopeGraph<'a> {
    /// Node weights index into `nodes`; the extra root node (weight `None`) feeds every entry point.
    graph: DiGraph<Option<usize>, ()>,
    nodes: Vec<&'a FlowNode>,
    root: NodeIndex,
    by_id: HashMap<&'a str, NodeIndex>,
}

impl<'a> ScopeGraph<'a> {
    pub(super) fn new(scope: &'a Scope) -> ScopeGraph<'a> {
        let nodes: Vec<&FlowNode> = scope.flow_nodes.iter().collect();
        let mut graph = DiGraph::with_capacity(nodes.len() + 1, scope.sequence_flows.len() + 1);
        let indices: Vec<NodeIndex> = (0..nodes.len()).map(|i| graph.add_node(Some(i))).collect();
        let root = graph.add_node(None);
        // First occurrence wins for duplicate ids (BPMN0006 reports the duplicate).
        let mut by_id: HashMap<&str, NodeIndex> = HashMap::new();
        for (node, index) in nodes.iter().zip(&indices) {
            by_id.entry(node.id.as_str()).or_insert(*index);
        }

        for flow in &scope.sequence_flows {
            if let (Some(source), Some(target)) =
                (by_id.get(flow.source.as_str()), by_id.get(flow.target.as_str()))
            {
                graph.add_edge(*source, *target, ());
            }
        }
        let mut link_catches: HashMap<&str, Vec<NodeIndex>> = HashMap::new();
        for (node, index) in nodes.iter().zip(&indices) {
            if let FlowNodeKind::Event(event) = &node.kind {
                if let (
                    EventPosition::IntermediateCatch,
                    Some(EventDefinitionKind::Link { name: Some(name) }),
                ) = (&event.position, event.definition())
                {
                    link_catches.entry(name.as_str()).or_default().push(*index);
                }
            }
        }
        let has_start = nodes.iter().any(|node| is_start(node));
        for (node, index) in nodes.iter().zip(&indices) {
            let FlowNodeKind::Event(event) = &node.kind else {
                if is_entry_without_flow(node)
                    || (!has_start && graph.edges_directed(*index, Direction::Incoming).next().is_none())
                {
                    graph.add_edge(root, *index, ());
                }
                continue;
            };
            match (&event.position, event.definition()) {
                (EventPosition::Start { .. }, _) => {
                    graph.add_edge(root, *index, ());
                }
                (EventPosition::Boundary { attached_to, .. }, _) => {
                    if let Some(host) = by_id.get(attached_to.as_str()) {
                        graph.add_edge(*host, *index, ());
                    }
                }
                (EventPosition::IntermediateThrow, Some(EventDefinitionKind::Link { name: Some(name) })) => {
                    for catch in link_catches.get(name.as_str()).into_iter().flatten() {
                        graph.add_edge(*index, *catch, ());
                    }
                }
                _ => {
                    // No start events at all: BPMN's implicit start (every node without incoming flow).
                    if !has_start && graph.edges_directed(*index, Direction::Incoming).next().is_none() {
                        let is_link_catch =
                            matches!(event.definition(), Some(EventDefinitionKind::Link { .. }));
                        if !is_link_catch {
                            graph.add_edge(root, *index, ());
                        }
                    }
                }
            }
        }
        ScopeGraph { graph, nodes, root, by_id }
    }

    fn node(&self, index: NodeIndex) -> Option<&'a FlowNode> {
        self.graph[index].map(|i| self.nodes[i])
    }

    /// Flow nodes no path from an entry point reaches, in document order.
    pub(super) fn unreachable(&self) -> Vec<&'a FlowNode> {
        let mut visited = vec![false; self.graph.node_count()];
        let mut dfs = Dfs::new(&self.graph, self.root);
        while let Some(index) = dfs.next(&self.graph) {
            visited[index.index()] = true;
        }
        self.graph
            .node_indices()
            .filter(|index| !visited[index.index()])
            .filter_map(|index| self.node(index))
            .collect()
    }

    pub(super) fn structural_warnings(&self) -> Vec<Diagnostic> {
        let mut warnings = self.join_mismatches();
        warnings.extend(self.cycles_without_exit());
        warnings
    }

    /// Joins whose immediate dominator is a split of the other kind.
    fn join_mismatches(&self) -> Vec<Diagnostic> {
        let dominators = dominators::simple_fast(&self.graph, self.root);
        let mut warnings = Vec::new();
        for index in self.graph.node_indices() {
            let Some(join) = self.node(index) else { continue };
            let Some(join_kind) = join.as_gateway().map(|gateway| &gateway.kind) else { continue };
            let n_incoming = self.graph.edges_directed(index, Direction::Incoming).count();
            if n_incoming < 2 {
                continue;
            }
            let Some(split) =
                dominators.immediate_dominator(index).and_then(|dominator| self.node(dominator))
            else {
                continue;
            };
            let Some(split_kind) = split.as_gateway().map(|gateway| &gateway.kind) else { continue };
            let split_index = self.index_of(split);
            let n_split_outgoing =
                split_index.map_or(0, |i| self.graph.edges_directed(i, Direction::Outgoing).count());
            if n_split_outgoing < 2 {
                continue;
            }
            // Only branches that leave the split and reach the join without passing back through the split.
            match (join_kind, split_kind) {
                (GatewayKind::Parallel, GatewayKind::Exclusive | GatewayKind::EventBased { .. }) => {
                    warnings.push(
                        Diagnostic::warning(
                            Code::ParallelJoinAfterExclusiveSplit,
                            format!(
                                "parallel gateway '{}' waits for all {n_incoming} incoming branches, but they start at \
                                 {} '{}', which takes only one: the instance will wait here forever (use an \
                                 exclusive gateway to merge)",
                                join.id,
                                split.type_name(),
                                split.id
                            ),
                        )
                        .on(&join.id)
                        .at(join.pos),
                    );
                }
                (GatewayKind::Exclusive, GatewayKind::Parallel) => {
                    warnings.push(
                        Diagnostic::warning(
                            Code::ExclusiveJoinAfterParallelSplit,
                            format!(
                                "exclusive gateway '{}' merges the branches of parallel gateway '{}' without waiting: \
                                 everything after it runs once per branch (use a parallel gateway to synchronise)",
                                join.id, split.id
                            ),
                        )
                        .on(&join.id)
                        .at(join.pos),
                    );
                }
                _ => {}
            }
        }
        warnings
    }

    fn index_of(&self, node: &FlowNode) -> Option<NodeIndex> {
        self.by_id.get(node.id.as_str()).copied()
    }

    /// Strongly connected components with no edge leaving them.
    fn cycles_without_exit(&self) -> Vec<Diagnostic> {
        let mut warnings = Vec::new();
        for component in tarjan_scc(&self.graph) {
            let is_cycle = component.len() > 1
                || component.first().is_some_and(|only| self.graph.contains_edge(*only, *only));
            if !is_cycle {
                continue;
            }
            let has_exit = component.iter().any(|index| {
                self.graph
                    .edges_directed(*index, Direction::Outgoing)
                    .any(|edge| !component.contains(&edge.target()))
            });
            if has_exit {
                continue;
            }
            let mut members: Vec<&FlowNode> =
                component.iter().filter_map(|index| self.node(*index)).collect();
            members.sort_by_key(|node| node.pos);
            let Some(first) = members.first() else { continue };
            let names: Vec<String> = members.iter().map(|node| format!("'{}'", node.id)).collect();
            warnings.push(
                Diagnostic::warning(
                    Code::CycleWithoutExit,
                    format!(
                        "the cycle through {} has no way out: a token that enters it never leaves (add a \
                         conditional exit or a boundary event)",
                        names.join(", ")
                    ),
                )
                .on(&first.id)
                .at(first.pos),
            );
        }
        warnings
    }
}

fn is_start(node: &FlowNode) -> bool {
    matches!(node.as_event().map(|event| &event.position), Some(EventPosition::Start { .. }))
}

/// Activities entered by something other than a sequence flow: event sub-processes and compensation
/// handlers.
fn is_entry_without_flow(node: &FlowNode) -> bool {
    let instantiates = matches!(
        &node.kind,
        FlowNodeKind::Activity(Activity {
            kind: ActivityKind::Task(TaskKind::Receive { instantiate: true, .. }),
            ..
        }) | FlowNodeKind::Gateway(Gateway { kind: GatewayKind::EventBased { instantiate: true, .. }, .. })
    );
    instantiates
        || matches!(
            &node.kind,
            FlowNodeKind::Activity(Activity { is_for_compensation: true, .. })
                | FlowNodeKind::Activity(Activity {
                    kind: ActivityKind::SubProcess(SubProcess { kind: SubProcessKind::Event, .. }),
                    ..
                })
        )
}
