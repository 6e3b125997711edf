// Command promql-parse checks PromQL with Prometheus's own code, so the chart tests check the
// dashboard's queries and the alert rules with the real grammar instead of a look-alike. It links
// only the parser and the rule-file loader; promtool itself also links every service discovery
// (Kubernetes, AWS, Azure, GCE, ...) and takes many times longer to build.
//
//	promql-parse exprs        stdin: a JSON object {"<id>": "<expr>", ...}
//	promql-parse rules FILE   FILE: a Prometheus rule file ({groups: [...]}), checked as
//	                          `promtool check rules` checks it (rulefmt.Parse: unknown fields, the
//	                          expressions, label names, the templates of labels and annotations)
//
// `exprs` writes a JSON object {"<id>": {"error": "...", "type": "vector", "metrics": [...],
// "unnamed": n}, ...}: the parse error ("" when it parsed), the expression's value type, the metric
// names its selectors select (sorted, unique) and how many selectors name no metric. `rules` writes
// {"rules": n, "errors": [...]}.
// Exit status: 0 when everything parsed, 1 when something did not, 2 on bad usage or input.
package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"

	"github.com/prometheus/common/model"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Error   string   `json:"error"`
	Type    string   `json:"type"`
	Metrics []string `json:"metrics"`
	Unnamed int      `json:"unnamed"`
}

// metricName is the name a selector selects: its bare name, or an equality matcher on __name__.
func metricName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

func inspect(expr string, p parser.Parser) result {
	res := result{Metrics: []string{}}
	node, err := p.ParseExpr(expr)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Type = string(node.Type())
	seen := map[string]bool{}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			if name := metricName(vs); name == "" {
				res.Unnamed++
			} else if !seen[name] {
				seen[name] = true
				res.Metrics = append(res.Metrics, name)
			}
		}
		return nil
	})
	sort.Strings(res.Metrics)
	return res
}

func checkExprs(p parser.Parser) int {
	var exprs map[string]string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintf(os.Stderr, "promql-parse: stdin must be a JSON object of id -> expression: %v\n", err)
		return 2
	}
	out := make(map[string]result, len(exprs))
	status := 0
	for id, expr := range exprs {
		out[id] = inspect(expr, p)
		if out[id].Error != "" {
			status = 1
		}
	}
	return emit(out, status)
}

func checkRules(p parser.Parser, file string) int {
	content, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(os.Stderr, "promql-parse: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// Strict like promtool's default: unknown fields are errors, names follow the UTF-8 scheme.
	groups, errs := rulefmt.Parse(content, false, model.UTF8Validation, p, logger)
	report := struct {
		Rules  int      `json:"rules"`
		Errors []string `json:"errors"`
	}{Errors: []string{}}
	if groups != nil {
		for _, g := range groups.Groups {
			report.Rules += len(g.Rules)
		}
	}
	for _, e := range errs {
		report.Errors = append(report.Errors, e.Error())
	}
	status := 0
	if len(errs) > 0 {
		status = 1
	}
	return emit(report, status)
}

func emit(v any, status int) int {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "promql-parse: %v\n", err)
		return 2
	}
	return status
}

func main() {
	p := parser.NewParser(parser.Options{})
	switch {
	case len(os.Args) == 2 && os.Args[1] == "exprs":
		os.Exit(checkExprs(p))
	case len(os.Args) == 3 && os.Args[1] == "rules":
		os.Exit(checkRules(p, os.Args[2]))
	default:
		fmt.Fprintln(os.Stderr, "usage: promql-parse exprs < exprs.json | promql-parse rules FILE")
		os.Exit(2)
	}
}
