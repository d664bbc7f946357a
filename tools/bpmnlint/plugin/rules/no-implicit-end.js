// bpmnlint's no-implicit-end, unchanged except for one case it gets wrong.
//
// A compensation boundary event has no outgoing flow: it is linked to its compensation handler by an
// association. Upstream (bpmnlint 11.15 and 12.0, rules/no-implicit-end.js) looks for that association among
// the artifacts of the enclosing *process* only. Camunda Modeler (bpmn-js BpmnUpdater.updateSemanticParent)
// stores an association in the nearest process *or sub-process*, and govflow's engine reads it there
// (the compensated activity's own scope). So a compensation boundary inside a sub-process, drawn in the
// Modeler and run by govflow, was reported as an implicit end. This rule accepts it when the association is
// in any enclosing process or sub-process, and otherwise defers to the upstream rule for every element.
const { is } = require('bpmnlint-utils');

const upstream = require('bpmnlint/rules/no-implicit-end');

function isCompensationBoundary(node) {
  const definitions = node.eventDefinitions || [];

  return is(node, 'bpmn:BoundaryEvent') &&
    definitions.length > 0 &&
    definitions.every(definition => is(definition, 'bpmn:CompensateEventDefinition'));
}

function hasAssociationInAnEnclosingScope(node) {
  for (let scope = node.$parent; scope; scope = scope.$parent) {
    if (!is(scope, 'bpmn:Process') && !is(scope, 'bpmn:SubProcess')) {
      continue;
    }

    const associated = (scope.artifacts || []).some(
      artifact => is(artifact, 'bpmn:Association') && artifact.sourceRef && artifact.sourceRef.id === node.id
    );

    if (associated) {
      return true;
    }
  }

  return false;
}

module.exports = function() {
  const rule = upstream();

  function check(node, reporter) {
    if (isCompensationBoundary(node) && hasAssociationInAnEnclosingScope(node)) {
      return;
    }

    return rule.check(node, reporter);
  }

  return {
    check,
    meta: {
      documentation: {
        url: 'https://github.com/bpmn-io/bpmnlint/blob/main/docs/rules/no-implicit-end.md'
      }
    }
  };
};
