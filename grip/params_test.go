package grip

import (
	"reflect"
	"testing"
)

// The cases of Pushpin's core/httpheaderstest.cpp (parseParameters), then
// ours.
func TestListParamsSplitsAndParsesAsPushpin(t *testing.T) {
	p := func(name string) param { return param{name: name} }
	pv := func(name, value string) param { return param{name, value, true} }
	tests := []struct {
		name   string
		values []string
		want   []params
	}{
		{"repeated headers", []string{"apple", "banana", "cherry"},
			[]params{{p("apple")}, {p("banana")}, {p("cherry")}}},
		{"comma list", []string{"apple, banana, cherry"},
			[]params{{p("apple")}, {p("banana")}, {p("cherry")}}},
		{"quoted commas and escapes", []string{`apple; type="granny, smith", banana; type="\"yellow\""`},
			[]params{{p("apple"), pv("type", "granny, smith")}, {p("banana"), pv("type", `"yellow"`)}}},
		{"unterminated quote drops the part", []string{`apple; type=gala, banana; type="yellow, cherry`},
			[]params{{p("apple"), pv("type", "gala")}}},
		{"prev-id and filters", []string{"chat-42; prev-id=1041; filter=f1; filter=f2"},
			[]params{{p("chat-42"), pv("prev-id", "1041"), pv("filter", "f1"), pv("filter", "f2")}}},
		{"spaces trimmed", []string{"  a ;  prev-id = 7 ;flag ; x=\"q\" , b"},
			[]params{{p("a"), pv("prev-id", "7"), p("flag"), pv("x", "q")}, {p("b")}}},
		{"empty middle part kept", []string{"a,,b"}, []params{{p("a")}, {p("")}, {p("b")}}},
		{"trailing comma adds nothing", []string{"a,"}, []params{{p("a")}}},
		{"empty value", []string{""}, nil},
		{"empty param value", []string{"a; prev-id="}, []params{{p("a"), pv("prev-id", "")}}},
		{"backslash at end of quoted value", []string{`a; x="b\`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := listParams(tt.values, true)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("listParams(%q) =\n %#v\nwant\n %#v", tt.values, got, tt.want)
			}
		})
	}
}

func TestSplitListKeepsUnterminatedQuoteWhole(t *testing.T) {
	// Pushpin's getAll (split) cases: an open quote swallows the rest.
	for _, v := range []string{`"apple`, `"apple\`, `a, "b, c`} {
		got := splitList(v)
		last := got[len(got)-1]
		if v == `a, "b, c` {
			if !reflect.DeepEqual(got, []string{"a", `"b, c`}) {
				t.Errorf("splitList(%q) = %q", v, got)
			}
			continue
		}
		if len(got) != 1 || last != v {
			t.Errorf("splitList(%q) = %q, want [%q]", v, got, v)
		}
	}
}

func TestParseParamsAllParameters(t *testing.T) {
	// Grip-Set-Meta parses its first part as name=value too.
	got, ok := parseParams(`foo="b a r"; x`, false)
	want := params{{"foo", "b a r", true}, {name: "x"}}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, %v", got, ok)
	}
	if got, _ := parseParams("", false); len(got) != 0 {
		t.Errorf("empty value gave %#v", got)
	}
}
