package bot

import "testing"

func TestGroupNote(t *testing.T) {
	made := &Job{State: JobDelivered}
	posting := &Job{State: JobPosting}
	refused := &Job{State: JobFailed, Refused: true}
	failed := &Job{State: JobFailed}
	canceled := &Job{State: JobCanceled}
	for _, tc := range []struct {
		name  string
		count int
		jobs  []*Job
		want  string
	}{
		{"AllMade", 4, []*Job{made, posting, made, made}, ""},
		{"OneRefused", 4, []*Job{made, posting, refused, made}, "3 of 4 made; one was refused by moderation (not charged)."},
		{"Mixed", 4, []*Job{made, refused, failed, canceled}, "1 of 4 made; one was refused by moderation, one was cancelled, one failed (not charged)."},
		{"TwoFailed", 3, []*Job{failed, made, failed}, "1 of 3 made; 2 failed (not charged)."},
		{"LostFromStore", 2, []*Job{made}, "1 of 2 made; one failed (not charged)."},
		{"NoneMade", 2, []*Job{refused, refused}, "None of the 2 variations could be made: 2 were refused by moderation. Nothing was charged for them."},
		{"AllCancelled", 3, []*Job{canceled, canceled, canceled}, "Cancelled."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := groupNote(tc.count, tc.jobs); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
