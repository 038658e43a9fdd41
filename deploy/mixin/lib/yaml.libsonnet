// Rule groups as the YAML text of deploy/prometheus/rules/mailbox.rules.yml: keys in the
// order Prometheus documents them, multi-line expressions as literal blocks, descriptions
// folded (`>-`) at the line breaks they were written with, and comments kept. A rule's
// hidden `comment` goes above it, `comments.KEY` above that key; `folded.description`
// holds the written lines of an annotation (see `folded` below).
local ruleKeys = ['record', 'alert', 'expr', 'for', 'keep_firing_for', 'labels', 'annotations'];
local annotationKeys = ['summary', 'description', 'runbook_url'];

// std.findSubstr, std.escapeStringJson, std.rstripChars and std.lstripChars are written in
// jsonnet and take seconds on the rules; these take milliseconds.
local contains(s, part) = std.strReplace(s, part, '') != s;
local quoted(s) =
  if contains(s, '"') || contains(s, '\\') then std.escapeStringJson(s) else '"' + s + '"';

local textLines(text) =
  local lines = std.split(text, '\n');
  if lines[std.length(lines) - 1] == '' then lines[:std.length(lines) - 1] else lines;

// YAML plain scalars that need no quotes; anything else is double-quoted (JSON escaping).
local plainSafe(s) =
  s != ''
  && !contains('[]{}!&*\'"|>%@`#,?:- ', s[0])
  && !contains(s, ': ')
  && !contains(s, ' #')
  && !contains(s, '\n')
  && s[std.length(s) - 1] != ' ';

local scalar(value) =
  local s = if std.isString(value) then value else std.toString(value);
  if plainSafe(s) then s else quoted(s);

local ordered(obj, first) =
  [k for k in first if std.objectHas(obj, k)]
  + std.sort([k for k in std.objectFields(obj) if std.member(first, k) == false]);

local commentLines(text, indent) =
  [if line == '' then indent + '#' else indent + '# ' + line for line in textLines(text)];

local block(indent, head, style, text) =
  [indent + head + ': ' + style]
  + [if line == '' then '' else indent + '  ' + line for line in textLines(text)];

local entry(indent, key, value, foldedText=null) =
  if foldedText != null then block(indent, key, '>-', foldedText)
  else if std.isString(value) && contains(value, '\n') then
    block(indent, key, '|', value)
  else if key == 'summary' then [indent + key + ': ' + quoted(value)]
  else [indent + key + ': ' + scalar(value)];

local mapping(indent, key, obj, first) =
  local folded = if std.objectHasAll(obj, 'folded') then obj.folded else {};
  [indent + key + ':']
  + std.flattenArrays([
    entry(indent + '  ', k, obj[k], if std.objectHas(folded, k) then folded[k] else null)
    for k in ordered(obj, first)
  ]);

local rule(indent, r) =
  local comments = if std.objectHasAll(r, 'comments') then r.comments else {};
  local lines = std.flattenArrays([
    (if std.objectHas(comments, k) then commentLines(comments[k], indent + '  ') else [])
    + (
      if std.isObject(r[k]) then mapping(indent + '  ', k, r[k], if k == 'labels' then [] else annotationKeys)
      else entry(indent + '  ', k, r[k])
    )
    for k in ordered(r, ruleKeys)
  ]);
  (if std.objectHasAll(r, 'comment') then commentLines(r.comment, indent) else [])
  + [indent + '- ' + lines[0][std.length(indent) + 2:]]
  + lines[1:];

// A blank line between rules, except between recording rules without a comment between them.
local spaced(rules, i) =
  i > 0 && !(std.objectHas(rules[i], 'record') && std.objectHas(rules[i - 1], 'record')
             && !std.objectHasAll(rules[i], 'comment'));

local group(indent, g) =
  [indent + '- name: ' + scalar(g.name)]
  + [indent + '  ' + k + ': ' + scalar(g[k]) for k in ordered(g, []) if k != 'name' && k != 'rules']
  + [indent + '  rules:']
  + std.flattenArrays([
    (if spaced(g.rules, i) then [''] else []) + rule(indent + '    ', g.rules[i])
    for i in std.range(0, std.length(g.rules) - 1)
  ]);

{
  // `description: ...` whose YAML keeps the written line breaks: the value is the folded text.
  folded(text):: {
    description: std.join(' ', textLines(text)),
    folded:: { description: text },
  },

  // The lines of `groups:` (at `indent`) and its groups, blank lines between groups.
  groups(indent, groups)::
    [indent + 'groups:']
    + std.flattenArrays([
      (if i > 0 then [''] else []) + group(indent + '  ', groups[i])
      for i in std.range(0, std.length(groups) - 1)
    ]),

  comment(text):: commentLines(text, ''),
}
