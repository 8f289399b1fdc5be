package localcloud

// The job lists of the AWX stand-in (GET /api/v2/jobs/ and
// GET /api/v2/job_templates/{id}/jobs/), filtered, ordered and paginated as
// AWX does it (awx/api/filters.py and pagination.py, on Django REST
// Framework):
//
//   - Every query parameter that is not reserved is a Django field lookup,
//     `<field>[__<lookup>]=<value>`, optionally prefixed with `or__`,
//     `chain__` and/or `not__`. Lookups: exact (the default), iexact,
//     contains, icontains, startswith, istartswith, endswith, iendswith, gt,
//     gte, lt, lte, in (comma list), isnull. A repeated parameter adds one
//     filter per value. `or__` filters are ORed together, everything else
//     is ANDed.
//   - Reserved names are not filters: page, page_size, format, order,
//     order_by, search, type, host_filter, count_disabled, no_truncate and
//     limit. So, as in AWX, `?limit=<host>` does NOT filter jobs by their
//     limit (AWX reserves the name for a pagination style): write
//     `?limit__exact=<host>`.
//   - A field a job does not have is a 400 with {"detail": "Job has no field
//     named '<name>'"}, a value of the wrong type a 400 too. The stand-in
//     only knows the fields it renders (awxJobFields); a real AWX field it
//     does not model (inventory, project, modified ...) is refused the same
//     way, so a test notices rather than getting a silently unfiltered list.
//   - order_by (or order): comma list of fields, "-" for descending; ties
//     and the default are by id. NULLs sort last ascending, first
//     descending, as in PostgreSQL.
//   - page_size: default 25, at most 200 (larger is capped, a bad one is the
//     default); page: from 1, or "last"; a page past the end is a 404
//     {"detail": "Invalid page."}. next and previous are the request's path
//     and query with page replaced (query keys sorted), null at the ends.

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Page sizes of AWX's job lists.
const (
	awxDefaultPageSize = 25
	awxMaxPageSize     = 200
)

// awxReserved are the query parameters AWX's field-lookup filter skips.
var awxReserved = map[string]bool{
	"page": true, "page_size": true, "format": true, "order": true, "order_by": true,
	"search": true, "type": true, "host_filter": true, "count_disabled": true,
	"no_truncate": true, "limit": true,
}

// awxLookups are the Django lookups AWX accepts (regex, iregex and search
// are refused by the stand-in with a message that says so).
var awxLookups = map[string]bool{
	"exact": true, "iexact": true, "contains": true, "icontains": true,
	"startswith": true, "istartswith": true, "endswith": true, "iendswith": true,
	"regex": true, "iregex": true, "gt": true, "gte": true, "lt": true, "lte": true,
	"in": true, "isnull": true, "search": true,
}

type awxKind int

const (
	awxInt     awxKind = iota // integer column
	awxRelated                // foreign key (id, or none/null)
	awxText
	awxBool
	awxTime // datetime, NULL while zero
)

// awxField is a job field that can be filtered and ordered on. value returns
// an int, string, bool or time.Time, or nil for NULL.
type awxField struct {
	kind  awxKind
	value func(j AWXJob) any
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

var awxJobFields = map[string]awxField{
	"id":   {awxInt, func(j AWXJob) any { return j.ID }},
	"name": {awxText, func(j AWXJob) any { return j.Name }},
	"job_template": {awxRelated, func(j AWXJob) any {
		if j.TemplateID == 0 {
			return nil
		}
		return j.TemplateID
	}},
	"launch_type":     {awxText, func(j AWXJob) any { return j.LaunchType }},
	"status":          {awxText, func(j AWXJob) any { return j.Status }},
	"failed":          {awxBool, func(j AWXJob) any { return j.Failed }},
	"limit":           {awxText, func(j AWXJob) any { return j.Limit }},
	"job_explanation": {awxText, func(j AWXJob) any { return j.Explanation }},
	"created":         {awxTime, func(j AWXJob) any { return nullTime(j.Created) }},
	"started":         {awxTime, func(j AWXJob) any { return nullTime(j.Started) }},
	"finished":        {awxTime, func(j AWXJob) any { return nullTime(j.Finished) }},
}

// awxBadRequest is a 400 answer: detail is AWX's "detail" text.
type awxBadRequest struct{ detail string }

func (e awxBadRequest) Error() string { return e.detail }

// validationError renders Django ValidationError messages as AWX does: the
// detail is the JSON list of messages.
func validationError(msg string) awxBadRequest {
	b, _ := json.Marshal([]string{msg})
	return awxBadRequest{string(b)}
}

// awxFilter is one field lookup of a query string.
type awxFilter struct {
	field  string
	lookup string
	negate bool
	value  any   // converted value; nil is NULL
	values []any // for "in"
}

func (f awxFilter) matches(j AWXJob) bool {
	return f.test(awxJobFields[f.field].value(j)) != f.negate
}

func (f awxFilter) test(v any) bool {
	switch f.lookup {
	case "isnull":
		return (v == nil) == f.value.(bool)
	case "in":
		return slices.ContainsFunc(f.values, func(x any) bool { return x != nil && v != nil && compareAWX(v, x) == 0 })
	}
	if v == nil || f.value == nil {
		// SQL: NULL equals nothing; "field=none" is an isnull test.
		return f.lookup == "exact" && v == nil && f.value == nil
	}
	switch f.lookup {
	case "exact":
		return compareAWX(v, f.value) == 0
	case "gt":
		return compareAWX(v, f.value) > 0
	case "gte":
		return compareAWX(v, f.value) >= 0
	case "lt":
		return compareAWX(v, f.value) < 0
	case "lte":
		return compareAWX(v, f.value) <= 0
	}
	s, want := fmt.Sprint(v), fmt.Sprint(f.value)
	if strings.HasPrefix(f.lookup, "i") {
		s, want = strings.ToLower(s), strings.ToLower(want)
	}
	switch strings.TrimPrefix(f.lookup, "i") {
	case "exact":
		return s == want
	case "contains":
		return strings.Contains(s, want)
	case "startswith":
		return strings.HasPrefix(s, want)
	case "endswith":
		return strings.HasSuffix(s, want)
	}
	return false
}

// compareAWX orders two non-NULL values of the same field.
func compareAWX(a, b any) int {
	switch x := a.(type) {
	case int:
		return x - b.(int)
	case string:
		return strings.Compare(x, b.(string))
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case time.Time:
		return x.Compare(b.(time.Time))
	}
	return 0
}

// parseAWXFilters reads the field lookups of a job list's query string. It
// returns the filters to AND (and_ and chain__ ones) and those to OR.
func parseAWXFilters(q url.Values) (and, or []awxFilter, err error) {
	for _, key := range slices.Sorted(maps.Keys(q)) {
		if awxReserved[key] {
			continue
		}
		lookupKey := key
		isOr := false
		if k, ok := strings.CutPrefix(lookupKey, "chain__"); ok {
			lookupKey = k
		} else if k, ok := strings.CutPrefix(lookupKey, "or__"); ok {
			lookupKey, isOr = k, true
		}
		negate := false
		if k, ok := strings.CutPrefix(lookupKey, "not__"); ok {
			lookupKey, negate = k, true
		}
		for _, v := range q[key] {
			f, err := parseAWXLookup(lookupKey, v)
			if err != nil {
				return nil, nil, err
			}
			f.negate = negate
			if isOr {
				or = append(or, f)
			} else {
				and = append(and, f)
			}
		}
	}
	return and, or, nil
}

// parseAWXLookup parses one "<field>[__<lookup>]" with its value.
func parseAWXLookup(key, raw string) (awxFilter, error) {
	path, lookup := key, "exact"
	if i := strings.LastIndex(key, "__"); i >= 0 && awxLookups[key[i+2:]] {
		path, lookup = key[:i], key[i+2:]
	}
	if path == "" {
		return awxFilter{}, awxBadRequest{"Query string field name not provided."}
	}
	name, rest, related := strings.Cut(path, "__")
	field, ok := awxJobFields[name]
	if !ok {
		return awxFilter{}, awxBadRequest{fmt.Sprintf("Job has no field named '%s'", name)}
	}
	if related {
		if field.kind != awxRelated {
			next, _, _ := strings.Cut(rest, "__")
			return awxFilter{}, awxBadRequest{fmt.Sprintf("No related model for field %s.", next)}
		}
		return awxFilter{}, awxBadRequest{fmt.Sprintf("localcloud AWX stand-in: filters across relations (%s) are not emulated", path)}
	}
	f := awxFilter{field: name, lookup: lookup}
	switch lookup {
	case "search":
		return awxFilter{}, awxBadRequest{fmt.Sprintf("%s is not searchable", name)}
	case "regex", "iregex":
		return awxFilter{}, awxBadRequest{fmt.Sprintf("localcloud AWX stand-in: the %s lookup is not emulated", lookup)}
	case "isnull":
		b, err := parseAWXBool(raw)
		if err != nil {
			return awxFilter{}, err
		}
		f.value = b
		return f, nil
	case "in":
		if raw == "" {
			return awxFilter{}, awxBadRequest{"cannot provide empty value for __in"}
		}
		for _, item := range strings.Split(raw, ",") {
			v, err := awxValue(name, field.kind, item)
			if err != nil {
				return awxFilter{}, err
			}
			f.values = append(f.values, v)
		}
		return f, nil
	case "iexact":
		if field.kind != awxText {
			return awxFilter{}, awxBadRequest{fmt.Sprintf("%s is not a text field and cannot be filtered by case-insensitive search", name)}
		}
	}
	v, err := awxValue(name, field.kind, raw)
	if err != nil {
		return awxFilter{}, err
	}
	f.value = v
	return f, nil
}

// awxValue converts a query value to the field's type, with AWX's errors.
func awxValue(name string, kind awxKind, raw string) (any, error) {
	switch kind {
	case awxInt:
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil {
			return nil, validationError(fmt.Sprintf("“%s” value must be an integer.", raw))
		}
		return n, nil
	case awxRelated:
		if s := strings.ToLower(raw); s == "none" || s == "null" {
			return nil, nil
		}
		n, err := strconv.Atoi(raw)
		if err != nil {
			return nil, awxBadRequest{fmt.Sprintf("Invalid %s id: %s", name, raw)}
		}
		return n, nil
	case awxBool:
		return parseAWXBool(raw)
	case awxTime:
		t, ok := parseAWXTime(raw)
		if !ok {
			return nil, validationError(fmt.Sprintf("“%s” value has an invalid format. It must be in YYYY-MM-DD HH:MM[:ss[.uuuuuu]][TZ] format.", raw))
		}
		return t, nil
	}
	return raw, nil
}

// parseAWXBool is AWX's to_python_boolean.
func parseAWXBool(raw string) (bool, error) {
	switch strings.ToLower(raw) {
	case "true", "1", "t":
		return true, nil
	case "false", "0", "f", "none", "null":
		return false, nil
	}
	return false, awxBadRequest{fmt.Sprintf("Unable to convert \"%s\" to boolean", raw)}
}

// parseAWXTime accepts what Django's DateTimeField does: RFC 3339, a space
// instead of the T, no zone (UTC, AWX's time zone), or a date alone.
func parseAWXTime(raw string) (time.Time, bool) {
	s := strings.Replace(strings.TrimSpace(raw), " ", "T", 1)
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// awxOrder is one key of order_by.
type awxOrder struct {
	field string
	desc  bool
}

func parseAWXOrder(q url.Values) ([]awxOrder, error) {
	raw := q.Get("order_by")
	if q.Has("order") && !q.Has("order_by") {
		raw = q.Get("order")
	}
	var out []awxOrder
	for _, name := range strings.Split(raw, ",") {
		if name == "" {
			continue
		}
		o := awxOrder{field: name}
		if n, ok := strings.CutPrefix(name, "-"); ok {
			o = awxOrder{field: n, desc: true}
		}
		if o.field == "type" { // every row is a job
			continue
		}
		if _, ok := awxJobFields[o.field]; !ok {
			return nil, awxBadRequest{fmt.Sprintf("Job has no field named '%s'", o.field)}
		}
		out = append(out, o)
	}
	return append(out, awxOrder{field: "id"}), nil
}

// sortAWXJobs orders jobs by keys; NULLs last ascending, first descending.
func sortAWXJobs(jobs []AWXJob, keys []awxOrder) {
	slices.SortStableFunc(jobs, func(x, y AWXJob) int {
		for _, k := range keys {
			get := awxJobFields[k.field].value
			a, b := get(x), get(y)
			var c int
			switch {
			case a == nil && b == nil:
			case a == nil:
				c = 1
			case b == nil:
				c = -1
			default:
				c = compareAWX(a, b)
			}
			if k.desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
}

// awxTypeMatches applies AWX's type filter: a job list holds only jobs.
func awxTypeMatches(q url.Values) bool {
	if !q.Has("type") {
		return true
	}
	return slices.Contains(strings.Split(q.Get("type"), ","), "job")
}

// awxSearchMatches applies search: every term (comma or space separated)
// in the job's name, case-insensitively (AWX also searches the description,
// which stand-in jobs do not have).
func awxSearchMatches(q url.Values, j AWXJob) bool {
	name := strings.ToLower(j.Name)
	for _, term := range strings.FieldsFunc(q.Get("search"), func(r rune) bool { return r == ',' || r == ' ' }) {
		if !strings.Contains(name, strings.ToLower(term)) {
			return false
		}
	}
	return true
}

func (a *AWX) listJobs(w http.ResponseWriter, r *http.Request) {
	a.serveJobList(w, r, 0)
}

func (a *AWX) listTemplateJobs(w http.ResponseWriter, r *http.Request) {
	if t, ok := a.template(w, r); ok {
		a.serveJobList(w, r, t.ID)
	}
}

// serveJobList answers a job list; templateID > 0 restricts it to the
// jobs of that template.
func (a *AWX) serveJobList(w http.ResponseWriter, r *http.Request, templateID int) {
	q := r.URL.Query()
	and, or, err := parseAWXFilters(q)
	if err == nil {
		var order []awxOrder
		if order, err = parseAWXOrder(q); err == nil {
			a.writeJobPage(w, r, q, a.selectJobs(q, templateID, and, or, order))
			return
		}
	}
	awxJSON(w, http.StatusBadRequest, map[string]any{"detail": err.Error()})
}

// selectJobs returns the jobs the list shows, in order.
func (a *AWX) selectJobs(q url.Values, templateID int, and, or []awxFilter, order []awxOrder) []AWXJob {
	var out []AWXJob
	if !awxTypeMatches(q) {
		return out
	}
	for _, j := range a.Jobs() {
		if templateID > 0 && j.TemplateID != templateID || !awxSearchMatches(q, j) {
			continue
		}
		if !slices.ContainsFunc(and, func(f awxFilter) bool { return !f.matches(j) }) &&
			(len(or) == 0 || slices.ContainsFunc(or, func(f awxFilter) bool { return f.matches(j) })) {
			out = append(out, j)
		}
	}
	sortAWXJobs(out, order)
	return out
}

// writeJobPage paginates jobs as AWX does and writes the page.
func (a *AWX) writeJobPage(w http.ResponseWriter, r *http.Request, q url.Values, jobs []AWXJob) {
	size := awxDefaultPageSize
	if n, err := strconv.Atoi(q.Get("page_size")); err == nil && n > 0 {
		size = min(n, awxMaxPageSize)
	}
	pages := max(1, int(math.Ceil(float64(len(jobs))/float64(size))))
	page := 1
	if raw := q.Get("page"); raw == "last" {
		page = pages
	} else if raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > pages {
			awxJSON(w, http.StatusNotFound, map[string]any{"detail": "Invalid page."})
			return
		}
		page = n
	}
	link := func(p int) any {
		if p < 1 || p > pages {
			return nil
		}
		lq := cloneQuery(q)
		lq.Set("page", strconv.Itoa(p))
		return r.URL.Path + "?" + lq.Encode()
	}
	from := (page - 1) * size
	to := min(from+size, len(jobs))
	results := make([]map[string]any, 0, to-from)
	for _, j := range jobs[from:to] {
		results = append(results, a.jobJSON(j.ID, false))
	}
	awxJSON(w, http.StatusOK, map[string]any{"count": len(jobs), "next": link(page + 1), "previous": link(page - 1), "results": results})
}

// cloneQuery copies a query string's values.
func cloneQuery(q url.Values) url.Values {
	out := make(url.Values, len(q)+1)
	for k, v := range q {
		out[k] = slices.Clone(v)
	}
	return out
}
