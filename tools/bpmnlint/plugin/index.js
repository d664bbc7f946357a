// govflow's bpmnlint plugin: rules referenced from the repository's .bpmnlintrc as "govflow/<rule>".
module.exports = {
  rules: {
    'no-implicit-end': './rules/no-implicit-end'
  }
};
