/*
 * topic_names: the name of every Kafka topic of the design, said once.
 * Their partitions, replication and retention are topics.c's table; which
 * event type goes to which topic is event_topic's (event.h).
 */
#ifndef TODO_TOPIC_NAMES_H
#define TODO_TOPIC_NAMES_H

#define TOPIC_TASKS "tasks.events.v1"                 /* task.*, recurring_pattern.* */
#define TOPIC_REMINDERS "reminders.events.v1"         /* reminder.* */
#define TOPIC_USERS "users.events.v1"
#define TOPIC_NOTIFICATIONS "notifications.commands.v1" /* notification.* */
#define TOPIC_RECURRING "recurring.commands.v1"
#define TOPIC_SAGA "saga.events.v1"                   /* saga.*, recurring.task.generated */
#define TOPIC_DLQ "system.dlq.v1"                     /* dead letters (dlq.h) */
#define TOPIC_AUDIT "system.audit.v1"                 /* the audit trail (audit.h) */

#endif
