package fleet

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TemplateTTL is how long the instance type of a launch template version
// named "$Default" or "$Latest" is cached: those names move when someone
// creates a version or changes the default. A numbered version never changes
// and is cached for the life of the client.
const TemplateTTL = 10 * time.Minute

type templateKey struct{ id, name, version string }

type templateEntry struct {
	instanceType string
	fetched      time.Time
}

// numberedVersion reports whether v names a fixed launch template version.
func numberedVersion(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// templateInstanceType returns the instance type a launch template version
// launches, from the cache when it is fresh.
func (c *Client) templateInstanceType(ctx context.Context, lt types.FleetLaunchTemplateSpecification) (string, error) {
	key := templateKey{id: aws.ToString(lt.LaunchTemplateId), name: aws.ToString(lt.LaunchTemplateName), version: aws.ToString(lt.Version)}
	if key.version == "" {
		key.version = "$Default" // what EC2 uses when the fleet names no version
	}
	now := c.now()
	c.templatesMu.Lock()
	e, ok := c.templates[key]
	c.templatesMu.Unlock()
	if ok && (numberedVersion(key.version) || now.Sub(e.fetched) < TemplateTTL) {
		return e.instanceType, nil
	}

	in := &ec2.DescribeLaunchTemplateVersionsInput{
		LaunchTemplateId:   lt.LaunchTemplateId,
		LaunchTemplateName: lt.LaunchTemplateName,
		Versions:           []string{key.version},
	}
	name := strings.TrimSpace(key.id + " " + key.name)
	var out *ec2.DescribeLaunchTemplateVersionsOutput
	err := c.call(ctx, fmt.Sprintf("describing version %s of launch template %s", key.version, name), func(ctx context.Context) error {
		var err error
		out, err = c.api.DescribeLaunchTemplateVersions(ctx, in)
		return err
	})
	if err != nil {
		return "", err
	}
	t := ""
	for _, v := range out.LaunchTemplateVersions {
		if v.LaunchTemplateData != nil {
			t = string(v.LaunchTemplateData.InstanceType)
			break
		}
	}
	c.templatesMu.Lock()
	c.templates[key] = templateEntry{instanceType: t, fetched: now}
	c.templatesMu.Unlock()
	return t, nil
}
