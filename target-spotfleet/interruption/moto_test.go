package interruption

import (
	"context"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
)

// motoSQS starts moto_server on a free loopback port for this test and
// returns an SQS client for it. A missing moto_server fails the test: the
// SQS behaviour the watcher relies on is checked here and nowhere else.
func motoSQS(t *testing.T) *sqs.Client {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		t.Fatalf("moto_server is not on PATH; install it with: pip install 'moto[server]' (%v)", err)
	}
	// Take a free port, then hand it to moto (a small race, as with any
	// server that cannot be given a listener).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	require.NoError(t, l.Close())

	server := exec.Command(bin, "-H", "127.0.0.1", "-p", port)
	require.NoError(t, server.Start(), "starting moto_server")
	t.Cleanup(func() {
		_ = server.Process.Kill()
		_ = server.Wait()
	})

	endpoint := "http://127.0.0.1:" + port
	client := &http.Client{Timeout: time.Second}
	up := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(endpoint + "/moto-api/")
		if err == nil {
			_ = resp.Body.Close()
			break
		}
		if time.Now().After(up) {
			t.Fatalf("moto_server did not answer on %s within 30s: %v", endpoint, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return sqs.New(sqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
	})
}

func TestWatcherAgainstMotoSQS(t *testing.T) {
	api := motoSQS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	created, err := api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("spot-interruptions")})
	require.NoError(t, err)
	queueURL := aws.ToString(created.QueueUrl)
	require.NoError(t, ValidQueueURL(queueURL), "moto's queue URL")
	for _, body := range []string{
		warningBody,
		"{not json",
		edit(t, edit(t, warningBody, "source", "aws.health"), "detail-type", "AWS Health Event"),
	} {
		_, err := api.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(queueURL), MessageBody: aws.String(body)})
		require.NoError(t, err)
	}

	var mu sync.Mutex
	var seen []handled
	logs := &logBuffer{}
	w, err := NewWatcher(api, HandlerFunc(func(_ context.Context, ev Event, msg Message) Outcome {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, handled{ev, msg})
		return Outcome{Disposition: Done}
	}), Config{
		QueueURL:          queueURL,
		WaitTime:          time.Second,
		VisibilityTimeout: 10 * time.Second,
		HandleTimeout:     5 * time.Second,
		Logger:            hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug, JSONFormat: true}),
	})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		w.Run(runCtx)
	}()
	waitFor(t, "the three messages to be taken care of", func() bool {
		s := w.Stats()
		return s.Done+s.Malformed+s.Unsupported == 3
	})
	stop()
	receive(t, returned, "Run to return")

	require.Equal(t, Stats{Received: 3, Done: 1, Malformed: 1, Unsupported: 1}, w.Stats(), "logs:\n%v", logs.lines(t))
	mu.Lock()
	require.Len(t, seen, 1)
	require.Equal(t, KindSpotInterruption, seen[0].ev.Kind)
	require.Equal(t, "i-1234567890abcdef0", seen[0].ev.InstanceID)
	require.Equal(t, 1, seen[0].msg.ReceiveCount, "moto returns the system attributes asked for")
	require.False(t, seen[0].msg.Sent.IsZero())
	mu.Unlock()

	attrs, err := api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(queueURL),
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	require.NoError(t, err)
	require.Equal(t, "0", attrs.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)], "nothing left on the queue")
	require.Equal(t, "0", attrs.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)], "nothing left in flight")
}
