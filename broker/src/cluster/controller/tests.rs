use std::time::Duration;

use tokio::time::Instant;

use super::previous_controller_deadline;

const SESSION: Duration = Duration::from_millis(1000);
const GRACE: Duration = Duration::from_millis(400);

#[test]
fn the_previous_controller_s_session_counts_from_the_last_word_heard_from_it() {
    let now = Instant::now() + Duration::from_secs(10);
    let ms = Duration::from_millis;
    // Silent 750 ms when this node stood: 250 ms of its session are left.
    assert_eq!(
        previous_controller_deadline(now, Some(now - ms(750)), SESSION, GRACE),
        now + ms(250)
    );
    // Silent longer than a session: fenced at once.
    assert_eq!(
        previous_controller_deadline(now, Some(now - ms(1500)), SESSION, GRACE),
        now
    );
    // Heard from recently, or not known: never longer than the grace of any suspect.
    assert_eq!(
        previous_controller_deadline(now, Some(now - ms(100)), SESSION, GRACE),
        now + GRACE
    );
    assert_eq!(
        previous_controller_deadline(now, None, SESSION, GRACE),
        now + GRACE
    );
}
