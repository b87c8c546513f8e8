package blob

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Bucket is the few object calls the store needs, with S3 semantics. Keys
// are '/'-separated. Every write is a single PUT of a body held in memory
// (chunks are at most 64 KiB compressed, manifests small), so a conditional
// PUT is never split into a multipart upload that could ignore its condition.
//
// Errors: absent keys are errdefs.ErrNotFound (Get, Stat), an existing key
// refused by PutIfAbsent is ErrConflict, a store that cannot be
// reached is errdefs.ErrUnavailable.
type Bucket interface {
	// Get opens the object; errdefs.ErrNotFound when absent.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Put writes the object with a single PUT, overwriting.
	Put(ctx context.Context, key string, body []byte) error
	// PutIfAbsent writes the object only if no object has the key (a PUT
	// with If-None-Match: *); ErrConflict when the key exists.
	PutIfAbsent(ctx context.Context, key string, body []byte) error
	// Exists reports whether the key exists.
	Exists(ctx context.Context, key string) (bool, error)
	// Stat returns the object's last-modified time; errdefs.ErrNotFound
	// when absent.
	Stat(ctx context.Context, key string) (time.Time, error)
	// List calls fn for every key under prefix, in key order; an error from
	// fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(key string, modified time.Time) error) error
	// Delete removes the object; deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
}

// S3Config says where the bucket is. Credentials come from the
// environment or a file (S3CredentialsFromEnv), never from flags.
type S3Config struct {
	Endpoint  string // URL, http or https, no path: "https://s3.eu-west-1.amazonaws.com", "http://127.0.0.1:9000"
	Bucket    string
	Region    string // "" lets the client discover it (us-east-1 for most S3-compatible servers)
	AccessKey string
	SecretKey string
}

// S3CredentialsFromEnv returns the S3 access and secret keys. With a file,
// it reads them from it: either two lines, access key then secret key, or
// KEY=VALUE lines (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; the
// lower-case names of ~/.aws/credentials work too; '#' comments and
// [section] lines are skipped). Without one, from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY in the environment.
func S3CredentialsFromEnv(file string) (access, secret string, err error) {
	if file == "" {
		access, secret = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		if access == "" || secret == "" {
			return "", "", errdefs.WithHint(
				fmt.Errorf("s3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set: %w", errdefs.ErrInvalid),
				"set both in wispd's environment, or name a file holding them")
		}
		return access, secret, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", "", fmt.Errorf("s3 credentials: %w", err)
	}
	access, secret = parseCredentials(data)
	if access == "" || secret == "" {
		return "", "", errdefs.WithHint(
			fmt.Errorf("s3 credentials: %s holds no access key and secret key: %w", file, errdefs.ErrInvalid),
			"write the access key on the first line and the secret key on the second, or AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines")
	}
	return access, secret, nil
}

func parseCredentials(data []byte) (access, secret string) {
	var plain []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			plain = append(plain, line)
			continue
		}
		k = strings.TrimPrefix(strings.TrimSpace(k), "export ")
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		switch strings.ToUpper(strings.TrimSpace(k)) {
		case "AWS_ACCESS_KEY_ID":
			access = v
		case "AWS_SECRET_ACCESS_KEY":
			secret = v
		}
	}
	if access == "" && secret == "" && len(plain) == 2 {
		return plain[0], plain[1]
	}
	return access, secret
}

// s3Bucket is a Bucket on any S3-compatible server through minio-go.
type s3Bucket struct {
	c      *minio.Client
	bucket string
	where  string // endpoint/bucket, for errors
}

var _ Bucket = (*s3Bucket)(nil)

// NewS3 connects to the bucket (path-style addressing, so any
// S3-compatible server works without DNS per bucket) and checks that it
// exists.
func NewS3(cfg S3Config) (Bucket, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("s3 endpoint %q: want http://HOST[:PORT] or https://HOST[:PORT]: %w", cfg.Endpoint, errdefs.ErrInvalid)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("s3 endpoint %q: a path is not supported (the bucket goes in its own setting): %w", cfg.Endpoint, errdefs.ErrInvalid)
	}
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("s3: no bucket named: %w", errdefs.ErrInvalid)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 endpoint %q: %w", cfg.Endpoint, err)
	}
	b := &s3Bucket{c: c, bucket: cfg.Bucket, where: u.Host + "/" + cfg.Bucket}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, b.err("check bucket", "", err)
	}
	if !ok {
		return nil, errdefs.WithHint(
			fmt.Errorf("s3 bucket %q does not exist at %s: %w", cfg.Bucket, u.Host, errdefs.ErrNotFound),
			"create the bucket first (for example `aws s3 mb s3://"+cfg.Bucket+"` or `mc mb ALIAS/"+cfg.Bucket+"`), or check --s3 and --s3-bucket")
	}
	return b, nil
}

// err gives a minio error its errdefs kind and the context a person needs.
func (b *s3Bucket) err(op, key string, err error) error {
	kind := errdefs.ErrUnavailable
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.NoSuchKey || resp.Code == minio.NoSuchBucket:
		kind = errdefs.ErrNotFound
	case resp.StatusCode == http.StatusNotFound && resp.Code == "":
		kind = errdefs.ErrNotFound
	case resp.Code == minio.PreconditionFailed || resp.StatusCode == http.StatusPreconditionFailed ||
		resp.StatusCode == http.StatusConflict:
		// 409 is AWS's answer to two conditional writes of one key racing.
		kind = ErrConflict
	case resp.Code == "AccessDenied" || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch":
		return errdefs.WithHint(fmt.Errorf("s3 %s %s/%s: %w: %w", op, b.where, key, err, errdefs.ErrInvalid),
			"check the S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the credentials file)")
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("s3 %s %s/%s: %w", op, b.where, key, err)
	}
	return fmt.Errorf("s3 %s %s/%s: %w: %w", op, b.where, key, err, kind)
}

func (b *s3Bucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	obj, err := b.c.GetObject(ctx, b.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, b.err("get", key, err)
	}
	// Stat makes the first request, so a missing key fails here rather than
	// at the first Read.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, b.err("get", key, err)
	}
	return obj, nil
}

func (b *s3Bucket) put(ctx context.Context, key string, body []byte, opts minio.PutObjectOptions) error {
	opts.DisableMultipart = true // one PUT: conditions hold, and bodies are small
	opts.ContentType = "application/octet-stream"
	_, err := b.c.PutObject(ctx, b.bucket, key, bytes.NewReader(body), int64(len(body)), opts)
	if err != nil {
		return b.err("put", key, err)
	}
	return nil
}

func (b *s3Bucket) Put(ctx context.Context, key string, body []byte) error {
	return b.put(ctx, key, body, minio.PutObjectOptions{})
}

// PutIfAbsent sends If-None-Match: * through minio-go's
// PutObjectOptions.SetMatchETagExcept("*"); AWS S3 (since 2024), MinIO and
// gofakes3 (v1.2.0, checked by TestPutIfAbsent) refuse the PUT with 412 when
// the key exists.
func (b *s3Bucket) PutIfAbsent(ctx context.Context, key string, body []byte) error {
	var opts minio.PutObjectOptions
	opts.SetMatchETagExcept("*")
	return b.put(ctx, key, body, opts)
}

func (b *s3Bucket) Stat(ctx context.Context, key string) (time.Time, error) {
	info, err := b.c.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return time.Time{}, b.err("stat", key, err)
	}
	return info.LastModified, nil
}

func (b *s3Bucket) Exists(ctx context.Context, key string) (bool, error) {
	_, err := b.Stat(ctx, key)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (b *s3Bucket) List(ctx context.Context, prefix string, fn func(key string, modified time.Time) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio's listing goroutine when fn fails
	for obj := range b.c.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return b.err("list", prefix, obj.Err)
		}
		if err := fn(obj.Key, obj.LastModified); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (b *s3Bucket) Delete(ctx context.Context, key string) error {
	err := b.c.RemoveObject(ctx, b.bucket, key, minio.RemoveObjectOptions{})
	if err != nil && !errors.Is(b.err("delete", key, err), errdefs.ErrNotFound) {
		return b.err("delete", key, err)
	}
	return nil
}
