package longpoll

import (
	"net/url"
	"testing"
)

func TestQueryParamIsURLValuesGet(t *testing.T) {
	for _, q := range []string{
		"", "since=e-1", "a=1&since=e-2&since=e-3", "since=&since=e-4", "since=e%3A5", "si%6Ece=e-6",
		"since=%zz&since=e-7", "since;x=1&since=e-8", "since=a;b&since=e-9", "since", "x=since", "since=a+b",
	} {
		want := ""
		if v, _ := url.ParseQuery(q); v != nil {
			want = v.Get("since")
		}
		if got := queryParam(q, "since"); got != want {
			t.Errorf("queryParam(%q) = %q, url.ParseQuery gives %q", q, got, want)
		}
	}
}
